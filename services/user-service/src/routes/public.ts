import { userIdSchema } from "#packages/contracts/ids.ts";
import { forbidden, issuedTokenSchema, principalOf, securityFor } from "#packages/http/auth.ts";
import { ApiError, ok } from "#packages/http/errors.ts";
import { BODY_ERRORS, envelope, errorResponses } from "#packages/http/openapi.ts";
import type { HttpServer } from "#packages/http/server.ts";
import { hashBelowCost, hashPassword, toApiUser, usernameSchema } from "../domain.ts";
import { createUser, findCredentials, upgradePasswordHash } from "../ledger/users.ts";
import type { RouteDeps } from "./deps.ts";
import { orRefused, refuse } from "./refusals.ts";
import { createUserBody, loginBody, userResponse } from "./schemas.ts";
import { registerUserRecordRoutes } from "./user-record.ts";

export function registerPublicRoutes(app: HttpServer, deps: RouteDeps): void {
  registerLogin(app, deps);
  registerSignUp(app, deps);
  registerUserRecordRoutes(app, deps);
}

/** Per client address, then per username: 429 with Retry-After past either. */
async function throttle(deps: RouteDeps, request: { ip: string }, username_key: string): Promise<void> {
  await deps.limits.address.enforce(`auth:address:${request.ip}`);
  await deps.limits.username.enforce(username_key);
}

function registerLogin(app: HttpServer, deps: RouteDeps): void {
  const { pool, auth, hasher, revocations, limits } = deps;
  // A wrong password costs one scrypt; so does an unknown username (against this dummy hash),
  // so the answer time does not tell which usernames exist.
  const dummyHash = hashPassword(`no user ${Math.random()}`, hasher.log2_n);
  app.post(
    "/auth/login",
    {
      schema: {
        summary: "Exchange a username and password for a short-lived access token",
        tags: ["auth"],
        body: loginBody,
        response: {
          200: envelope(issuedTokenSchema.extend({ user_id: userIdSchema })).describe(
            "An access token to send as `Authorization: Bearer <access_token>`",
          ),
          ...errorResponses(BODY_ERRORS, {
            401: "Unknown username or wrong password (one answer for both)",
            403: "`account_locked`: the password is right but the operator locked the account",
            429: "Too many attempts from this address or for this username; retry after Retry-After seconds",
            503: "Too many password checks at once, or an engine is unavailable; retry after Retry-After seconds",
          }),
        },
      },
    },
    async (request, reply) => {
      // A credential must never be kept by a cache, whatever the answer.
      reply.header("cache-control", "no-store");
      const { username, password } = request.body;
      const username_key = `login:username:${username.toLowerCase()}`;
      await throttle(deps, request, username_key);
      // A username that breaks the sign-up rule matches nobody: not even asked of the database.
      const found = usernameSchema.safeParse(username).success ? await findCredentials(pool, username) : null;
      const valid = await hasher.verify(password, found?.password_hash ?? (await dummyHash));
      if (found === null || !valid) {
        throw new ApiError(401, "invalid_credentials", "invalid username or password");
      }
      await limits.username.reset(username_key);
      // Told only to whoever knows the password (nothing to learn by probing), so that the owner
      // knows to ask the operator rather than retry.
      if (found.locked) throw refuse("account_locked", "this account is locked; contact the operator");
      if (hashBelowCost(found.password_hash, hasher.log2_n))
        await upgradeHash(app, deps, { user_id: found.id, old_hash: found.password_hash, password });
      const version = await revocations.issueVersion(found.id, found.token_version);
      const token = await auth.issueUserToken(found.id, version);
      return ok({ ...token, user_id: found.id });
    },
  );
}

/** A hash below the configured cost is replaced at login, the only time the password is known. */
async function upgradeHash(
  app: HttpServer,
  deps: RouteDeps,
  login: { user_id: number; old_hash: string; password: string },
): Promise<void> {
  const { user_id, old_hash, password } = login;
  try {
    await upgradePasswordHash(deps.pool, user_id, old_hash, await deps.hasher.hash(password));
  } catch (error) {
    // The login itself succeeded; the next one tries again.
    app.log.warn({ err: error, user_id }, "password hash upgrade skipped");
  }
}

function registerSignUp(app: HttpServer, deps: RouteDeps): void {
  const { pool, auth, hasher } = deps;
  app.post(
    "/users",
    {
      onRequest: auth.optional(),
      schema: {
        summary: "Sign up: a user and an empty wallet (an opening balance needs the operator credential)",
        tags: ["users"],
        security: [{}, ...securityFor("admin")],
        body: createUserBody,
        response: {
          201: userResponse.describe("The new user (never a password or its hash)"),
          ...errorResponses(BODY_ERRORS, 401, {
            403: "`balance` given without the operator credential",
            409: "The username is taken (case-insensitively)",
            429: "Too many sign-ups from this address or for this username; retry after Retry-After seconds",
            503: "Too many password hashes at once, or an engine is unavailable; retry after Retry-After seconds",
          }),
        },
      },
    },
    async (request, reply) => {
      const { username, password, balance } = request.body;
      if (balance !== undefined && principalOf(request)?.kind !== "admin") {
        throw forbidden("an opening balance needs the operator credential; sign-up opens an empty wallet");
      }
      if (principalOf(request)?.kind !== "admin") {
        await throttle(deps, request, `signup:username:${username.toLowerCase()}`);
      }
      const password_hash = await hasher.hash(password);
      const row = await orRefused(
        createUser(pool, { username, password_hash, opening_balance: balance ?? 0 }),
      );
      return reply.status(201).send(ok({ user: toApiUser(row) }));
    },
  );
}
