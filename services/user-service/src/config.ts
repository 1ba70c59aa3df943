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
  TOKEN_VERSION_TIMEOUT_MS: credentialEnv.TOKEN_VERSION_TIMEOUT_MS,
  USER_SERVICE_PORT: env.port(8000),
  /** Internal listener (ledger steps, hold reads, audit); default USER_SERVICE_PORT + 1000. */
  USER_SERVICE_INTERNAL_PORT: env.optionalPort(),
  LEDGER_DATABASE_URL: env.url(engineDefaults.LEDGER_DATABASE_URL),
  LEDGER_POOL_MAX: env.int(20, 1, 500),
  /** Log-in and sign-up limits, and the copy of token versions that transaction-service reads. */
  REDIS_URL: env.string(engineDefaults.REDIS_URL),
  REDIS_KEY_PREFIX: env.string(""),
  REDIS_TIMEOUT_MS: env.int(500, 5, 10_000),
  /** log2 of scrypt's N for new password hashes: OWASP's 2^17 (lower only for tests; 14 at least). */
  SCRYPT_LOG2_N: env.int(17, 14, 17),
  /** Password hashes computed at once (each takes a core and 128 MiB at N = 2^17). */
  HASH_CONCURRENCY_MAX: env.int(2, 1, 64),
  /** Password hashes waiting for a slot; past that, 503 with Retry-After. */
  HASH_QUEUE_MAX: env.int(32, 0, 10_000),
  /** Log-ins plus sign-ups per client address per window (0 = no limit). */
  AUTH_RATE_LIMIT_ADDRESS_MAX: env.int(30, 0, 1_000_000),
  AUTH_RATE_LIMIT_ADDRESS_WINDOW_MS: env.int(60_000, 1_000, 86_400_000),
  /** Attempts per username per window (log-ins, sign-ups, current_password checks); a success resets it. */
  AUTH_RATE_LIMIT_USERNAME_MAX: env.int(10, 0, 1_000_000),
  AUTH_RATE_LIMIT_USERNAME_WINDOW_MS: env.int(900_000, 1_000, 86_400_000),
};
