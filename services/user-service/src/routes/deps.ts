import type { Authenticator } from "#packages/http/auth.ts";
import type { RateLimiter } from "#packages/http/rate-limit.ts";
import type { Metrics } from "#packages/metrics/index.ts";
import type { Pool } from "#packages/pg/index.ts";
import type { PasswordHasher } from "../domain.ts";
import type { Revocations } from "../revocation.ts";

/** What the routes need: the ledger's database, credentials, hashing and rate limits. */
export interface RouteDeps {
  pool: Pool;
  auth: Authenticator;
  hasher: PasswordHasher;
  revocations: Revocations;
  /** Log-ins and sign-ups per client address, and attempts per username (a success resets it). */
  limits: { address: RateLimiter; username: RateLimiter };
  metrics?: Metrics;
}
