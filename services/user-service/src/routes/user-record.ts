/**
 * A user's own record on the public listener: read, change and close it (the user, or the
 * operator for any user). A new password needs the current one, and only the user sets it.
 */
import { z } from "zod";
import { forbidden, requirePrincipal, requireSelfOrAdmin, securityFor } from "#packages/http/auth.ts";
import { ok } from "#packages/http/errors.ts";
import { BODY_ERRORS, envelope, errorResponses } from "#packages/http/openapi.ts";
import type { HttpServer } from "#packages/http/server.ts";
import { toApiUser } from "../domain.ts";
import { closeUser, getUser, passwordHashOf, updateUser } from "../ledger/users.ts";
import type { RouteDeps } from "./deps.ts";
import { orRefused, refuse } from "./refusals.ts";
import { isoDate, updateUserBody, userParams, userResponse, userSchema } from "./schemas.ts";

export function registerUserRecordRoutes(app: HttpServer, deps: RouteDeps): void {
  registerReadUser(app, deps);
  registerUpdateUser(app, deps);
  registerCloseUser(app, deps);
}

function registerReadUser(app: HttpServer, deps: RouteDeps): void {
  app.get(
    "/users/:id",
    {
      onRequest: deps.auth.guard("user", "admin"),
      schema: {
        summary: "Read a user and their balance (the user themselves, or the operator)",
        tags: ["users"],
        security: securityFor("user", "admin"),
        params: userParams,
        response: {
          200: userResponse.describe("The user"),
          ...errorResponses(400, 401, 403, { 404: "No such user (or closed)" }),
        },
      },
    },
    async (request) => {
      requireSelfOrAdmin(requirePrincipal(request), request.params.id, `user ${request.params.id}`);
      const row = await getUser(deps.pool, request.params.id);
      if (row === null) throw refuse("user_not_found", `user ${request.params.id} not found`);
      return ok({ user: toApiUser(row) });
    },
  );
}

function registerUpdateUser(app: HttpServer, deps: RouteDeps): void {
  const { pool, hasher, revocations } = deps;
  app.put(
    "/users/:id",
    {
      onRequest: deps.auth.guard("user", "admin"),
      schema: {
        summary:
          "Change the username (the user, or the operator) or the password (the user only, with `current_password`; revokes their access tokens)",
        tags: ["users"],
        security: securityFor("user", "admin"),
        params: userParams,
        body: updateUserBody,
        response: {
          200: userResponse.describe("The user as changed"),
          ...errorResponses(BODY_ERRORS, 401, {
            403: "Another user's record, a password set by the operator, or `current_password` missing (`current_password_required`) or wrong (`current_password_mismatch`)",
            404: "No such user (or closed)",
            409: "The username is taken",
            429: "Too many wrong `current_password` attempts; retry after Retry-After seconds",
          }),
        },
      },
    },
    async (request) => {
      const principal = requirePrincipal(request);
      const { id } = request.params;
      requireSelfOrAdmin(principal, id, `user ${id}`);
      const { username, password, current_password } = request.body;
      if (password !== undefined) await checkPasswordChange(deps, principal.kind, id, current_password);
      const password_hash = password === undefined ? undefined : await hasher.hash(password);
      const row = await orRefused(updateUser(pool, id, { username, password_hash }, revocations.publish));
      if (password_hash !== undefined) await revocations.settle();
      return ok({ user: toApiUser(row) });
    },
  );
}

/**
 * Only the user sets their password, and only with the current one: neither the operator nor a
 * stolen access token can take a wallet over. Wrong guesses count against the user's limit.
 */
async function checkPasswordChange(
  deps: RouteDeps,
  kind: string,
  id: number,
  current: string | undefined,
): Promise<void> {
  if (kind !== "user") {
    throw forbidden("the operator cannot set or reset a password; lock the account instead");
  }
  // 403 rather than 400: the body is well-formed, but this caller has not proved enough.
  if (current === undefined) {
    throw refuse("current_password_required", "changing the password needs current_password in the body");
  }
  const key = `password:user:${id}`;
  await deps.limits.username.enforce(key);
  const stored = await passwordHashOf(deps.pool, id);
  if (stored === null) throw refuse("user_not_found", `user ${id} not found`);
  if (!(await deps.hasher.verify(current, stored))) {
    throw refuse("current_password_mismatch", "current_password is not this user's password");
  }
  await deps.limits.username.reset(key);
}

function registerCloseUser(app: HttpServer, deps: RouteDeps): void {
  app.delete(
    "/users/:id",
    {
      onRequest: deps.auth.guard("user", "admin"),
      schema: {
        summary: "Close a user with a zero balance (the user themselves, or the operator)",
        tags: ["users"],
        security: securityFor("user", "admin"),
        params: userParams,
        response: {
          200: envelope(z.object({ user: userSchema, deleted_at: isoDate })).describe("The closed user"),
          ...errorResponses(400, 401, 403, {
            404: "No such user (or already closed)",
            409: "The balance is not zero, or transfers are in flight",
          }),
        },
      },
    },
    async (request) => {
      requireSelfOrAdmin(requirePrincipal(request), request.params.id, `user ${request.params.id}`);
      const row = await orRefused(closeUser(deps.pool, request.params.id));
      return ok({ user: toApiUser(row), deleted_at: row.deleted_at.toISOString() });
    },
  );
}
