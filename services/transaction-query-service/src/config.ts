/**
 * What transaction-query-service reads from its environment, with the defaults `npm start` uses. Kept apart from
 * main.ts so that tests (and the README's check) can read the shape without starting the service.
 */
import { commonEnv, credentialEnv, engineDefaults, env } from "#packages/config/index.ts";

export const configShape = {
  ...commonEnv,
  QUERY_TOKEN: credentialEnv.QUERY_TOKEN,
  QUERY_TOKEN_SHA256: credentialEnv.QUERY_TOKEN_SHA256,
  TRANSACTION_QUERY_SERVICE_PORT: env.port(8002),
  /** Internal listener (health details, later metrics); default TRANSACTION_QUERY_SERVICE_PORT + 1000. */
  TRANSACTION_QUERY_SERVICE_INTERNAL_PORT: env.optionalPort(),
  MONGO_URL: env.string(engineDefaults.MONGO_URL),
  MONGO_DATABASE: env.string(engineDefaults.MONGO_DATABASE),
};
