/**
 * What user-service reads from its environment, with the defaults `npm start` uses. Kept apart from
 * main.ts so that tests (and the README's check) can read the shape without starting the service.
 */
import { commonEnv, credentialEnv, engineDefaults, env } from "#packages/config/index.ts";

export const configShape = {
  ...commonEnv,
  LEDGER_TOKEN: credentialEnv.LEDGER_TOKEN,
  LEDGER_TOKEN_SHA256: credentialEnv.LEDGER_TOKEN_SHA256,
  AUTH_TOKEN_SECRET: credentialEnv.AUTH_TOKEN_SECRET,
  AUTH_TOKEN_TTL_S: credentialEnv.AUTH_TOKEN_TTL_S,
  TOKEN_VERSION_CACHE_MS: credentialEnv.TOKEN_VERSION_CACHE_MS,
  USER_SERVICE_PORT: env.port(8000),
  /** Internal listener (ledger steps, hold reads, audit); default USER_SERVICE_PORT + 1000. */
  USER_SERVICE_INTERNAL_PORT: env.optionalPort(),
  LEDGER_DATABASE_URL: env.url(engineDefaults.LEDGER_DATABASE_URL),
  LEDGER_POOL_MAX: env.int(20, 1, 500),
};
