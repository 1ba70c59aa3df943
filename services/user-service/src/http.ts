/**
 * The HTTP API of user-service, registered from its route modules: routes/public.ts (sign-up,
 * log-in), routes/user-record.ts (a user's own record), routes/operator.ts (the operator's) and
 * routes/internal.ts (the ledger's steps, holds and audit). Shapes are in routes/schemas.ts and the
 * ledger's contract; refusals become HTTP answers in routes/refusals.ts only.
 */
import type { Listeners } from "#packages/http/server.ts";
import type { RouteDeps } from "./routes/deps.ts";
import { registerInternalRoutes } from "./routes/internal.ts";
import { registerOperatorRoutes, registerUserListRoute } from "./routes/operator.ts";
import { registerPublicRoutes } from "./routes/public.ts";

export type { RouteDeps } from "./routes/deps.ts";

/**
 * Who may do what:
 * - anyone: sign up (`POST /users`, zero balance) and log in (`POST /auth/login`), both
 *   rate-limited per client address and per username;
 * - a user (their access token): read, change and close their own record; a new password only
 *   with the current one;
 * - the operator (ADMIN_TOKEN): all of that for any user except setting a password, plus opening
 *   balances, deposits, the user list and locking accounts (which cannot take a wallet over);
 * - transaction-service (LEDGER_TOKEN): the two-phase ledger under /internal, and nobody else;
 *   served on the internal listener only (with the hold read and the audit), never the public one.
 */
export function registerRoutes(listeners: Listeners, deps: RouteDeps): void {
  registerPublicRoutes(listeners.public, deps);
  registerUserListRoute(listeners.public, deps);
  registerOperatorRoutes(listeners.public, deps);
  registerInternalRoutes(listeners.internal, deps);
}
