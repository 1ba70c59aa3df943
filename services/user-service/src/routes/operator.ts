/**
 * The operator's routes on the public listener (ADMIN_TOKEN): the user list, locking accounts
 * (which cannot take a wallet over) and deposits.
 */
import { z } from "zod";
import { securityFor } from "#packages/http/auth.ts";
import { ok } from "#packages/http/errors.ts";
import { BODY_ERRORS, envelope, errorResponses } from "#packages/http/openapi.ts";
import type { HttpServer } from "#packages/http/server.ts";
import { toApiDeposit, toApiUser } from "../domain.ts";
import { deposit } from "../ledger/deposits.ts";
import { listUsers, setLocked } from "../ledger/users.ts";
import type { RouteDeps } from "./deps.ts";
import { orRefused } from "./refusals.ts";
import {
  depositBody,
  depositHeaders,
  depositSchema,
  listUsersQuery,
  userParams,
  userSchema,
} from "./schemas.ts";

/** The list sits between sign-up and the user's record, as it always has in the API's document. */
export function registerUserListRoute(app: HttpServer, deps: RouteDeps): void {
  app.get(
    "/users",
    {
      onRequest: deps.auth.guard("admin"),
      schema: {
        summary: "List users by id (operator only)",
        tags: ["users"],
        security: securityFor("admin"),
        querystring: listUsersQuery,
        response: {
          200: envelope(
            z.object({
              users: z.array(userSchema),
              pagination: z.object({
                limit: z.number(),
                next_cursor: z.string().nullable(),
                has_more: z.boolean(),
              }),
            }),
          ).describe("A page of users; pass `next_cursor` as `cursor` for the next one"),
          ...errorResponses(400, 401, 403),
        },
      },
    },
    async (request) => {
      const { limit, cursor } = request.query;
      const page = await listUsers(deps.pool, { limit, after_id: cursor ?? 0 });
      const last = page.rows.at(-1);
      return ok({
        users: page.rows.map(toApiUser),
        pagination: { limit, next_cursor: page.has_more && last ? last.id : null, has_more: page.has_more },
      });
    },
  );
}

export function registerOperatorRoutes(app: HttpServer, deps: RouteDeps): void {
  registerLock(app, deps, true);
  registerLock(app, deps, false);
  registerDeposit(app, deps);
}

function registerLock(app: HttpServer, deps: RouteDeps, locked: boolean): void {
  const { pool, revocations } = deps;
  app.post(
    `/users/:id/${locked ? "lock" : "unlock"}`,
    {
      onRequest: deps.auth.guard("admin"),
      schema: {
        summary: locked
          ? "Lock an account (operator only): no log-in, and every access token of the user is revoked at once"
          : "Unlock an account (operator only): the user may log in again",
        tags: ["users"],
        security: securityFor("admin"),
        params: userParams,
        response: {
          200: envelope(z.object({ user: userSchema, locked: z.boolean() })).describe(
            "The user, now locked or not",
          ),
          ...errorResponses(400, 401, 403, { 404: "No such user (or closed)" }),
        },
      },
    },
    async (request) => {
      const row = await orRefused(setLocked(pool, request.params.id, locked, revocations.publish));
      if (locked) await revocations.settle();
      return ok({ user: toApiUser(row), locked });
    },
  );
}

function registerDeposit(app: HttpServer, deps: RouteDeps): void {
  app.post(
    "/users/:id/balance/add",
    {
      onRequest: deps.auth.guard("admin"),
      schema: {
        summary: "Deposit (top-up), journaled; operator only; optional Idempotency-Key",
        tags: ["users"],
        security: securityFor("admin"),
        params: userParams,
        headers: depositHeaders,
        body: depositBody,
        response: {
          200: envelope(z.object({ user: userSchema, deposit: depositSchema })).describe(
            "The deposit and the user's new balance (header Idempotent-Replayed: true on a replay)",
          ),
          ...errorResponses(BODY_ERRORS, 401, 403, {
            404: "No such user (or closed)",
            409: "The Idempotency-Key was used for another deposit",
            422: "The balance would exceed 2^53-1",
          }),
        },
      },
    },
    async (request, reply) => {
      const result = await orRefused(
        deposit(deps.pool, {
          user_id: request.params.id,
          amount: request.body.amount,
          idempotency_key: request.headers["idempotency-key"] ?? null,
        }),
      );
      // Stripe's convention: tell the client this answer is the first request's.
      if (result.replayed) reply.header("idempotent-replayed", "true");
      return ok({ user: toApiUser(result.user), deposit: toApiDeposit(result.deposit) });
    },
  );
}
