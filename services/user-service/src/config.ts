/**
 * What user-service reads from its environment, with the defaults `npm start` uses. Kept apart from
 * main.ts so that tests (and the README's check) can read the shape without starting the service.
 */
import { commonEnv, engineDefaults, env } from "#packages/config/index.ts";

export const configShape = {
  ...commonEnv,
  USER_SERVICE_PORT: env.port(8000),
  LEDGER_DATABASE_URL: env.url(engineDefaults.LEDGER_DATABASE_URL),
  LEDGER_POOL_MAX: env.int(20, 1, 500),
};
