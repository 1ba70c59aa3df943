/**
 * What transaction-query-service reads from its environment, with the defaults `npm start` uses. Kept apart from
 * main.ts so that tests (and the README's check) can read the shape without starting the service.
 */
import { commonEnv, engineDefaults, env } from "#packages/config/index.ts";

export const configShape = {
  ...commonEnv,
  TRANSACTION_QUERY_SERVICE_PORT: env.port(8002),
  MONGO_URL: env.string(engineDefaults.MONGO_URL),
  MONGO_DATABASE: env.string(engineDefaults.MONGO_DATABASE),
};
