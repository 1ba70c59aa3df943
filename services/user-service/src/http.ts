/**
 * The HTTP API of user-service: zod schemas validate every input before any query (unknown
 * fields refused), and describe every success response, so the serializer drops anything a
 * handler did not mean to send. Refusals are ApiErrors, rendered by the shared error handler.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import type { FastifyRequest } from "fastify";
import type { ZodTypeProvider } from "fastify-type-provider-zod";
import { z } from "zod";
import { transferIdSchema, userIdParamSchema, userIdSchema } from "#packages/contracts/ids.ts";
import { amountMinorSchema, balanceMinorSchema } from "#packages/contracts/money.ts";
import { ok } from "#packages/http/errors.ts";
import type { HttpServer } from "#packages/http/server.ts";
import type { Pool } from "#packages/pg/index.ts";
import {
  hashPassword,
  idempotencyKeySchema,
  pageLimitSchema,
  passwordSchema,
  refuse,
  toApiDeposit,
  toApiHold,
  toApiUser,
  usernameSchema,
} from "./domain.ts";
import {
  audit,
  closeUser,
  createUser,
  deposit,
  getHold,
  getUser,
  holdFunds,
  listUsers,
  postHold,
  updateUser,
  voidHold,
} from "./ledger.ts";

// ---------------------------------------------------------------------------------------------
// Response shapes.

const isoDate = z.iso.datetime({ offset: true });

const userSchema = z.object({
  id: userIdSchema,
  username: z.string(),
  balance: balanceMinorSchema,
  created_at: isoDate,
  updated_at: isoDate,
});

const depositSchema = z.object({
  id: z.number().int().positive(),
  user_id: userIdSchema,
  amount: amountMinorSchema,
  balance_after: balanceMinorSchema,
  created_at: isoDate,
});

const holdSchema = z.object({
  transfer_id: transferIdSchema,
  state: z.enum(["held", "posted", "voided"]),
  source_user_id: userIdSchema,
  dest_user_id: userIdSchema,
  amount: amountMinorSchema,
  source_balance_before: balanceMinorSchema,
  dest_balance_before: balanceMinorSchema.nullable(),
  created_at: isoDate,
  updated_at: isoDate,
});

const count = z.number().int().nonnegative();
const bigSum = z.string().regex(/^-?[0-9]+$/);
const auditSchema = z.object({
  accounts: count,
  wallets: count,
  journal_entries: count,
  postings: count,
  total_wallet_balance: bigSum,
  clearing_balance: bigSum,
  external_balance: bigSum,
  total_deposited: bigSum,
  sum_all_entries: bigSum,
  wallets_mismatching_journal: z.array(userIdSchema),
  negative_wallets: count,
  unbalanced_postings: count,
  entries_without_account: count,
  held_amount: bigSum,
  holds_by_state: z.object({ held: count, posted: count, voided: count }),
  consistent: z.boolean(),
});

function envelope<T extends z.ZodType>(data: T) {
  return z.object({ success: z.literal(true), data });
}

// ---------------------------------------------------------------------------------------------
// Request shapes.

const userParams = z.strictObject({ id: userIdParamSchema });
const transferParams = z.strictObject({ transfer_id: transferIdSchema });

const createUserBody = z.strictObject({
  username: usernameSchema,
  password: passwordSchema,
  balance: balanceMinorSchema.optional(),
});

const updateUserBody = z
  .strictObject({ username: usernameSchema.optional(), password: passwordSchema.optional() })
  .refine((body) => body.username !== undefined || body.password !== undefined, {
    error: "give username, password or both",
  });

const listUsersQuery = z.strictObject({
  limit: pageLimitSchema,
  cursor: userIdParamSchema.optional(),
});

const depositBody = z.strictObject({ amount: amountMinorSchema });
// Loose: every other request header passes through untouched.
const depositHeaders = z.looseObject({ "idempotency-key": idempotencyKeySchema.optional() });

const holdBody = z.strictObject({
  source_user_id: userIdSchema,
  dest_user_id: userIdSchema,
  amount: amountMinorSchema,
});
// post and void take no input but the path (Fastify gives null for no body); `{}` is accepted too.
const noBody = z.strictObject({}).nullish();

// ---------------------------------------------------------------------------------------------
// The service credential seam for /internal routes.

/**
 * When SERVICE_TOKEN is set, /internal routes require `Authorization: Bearer <token>`; when it
 * is empty (local development) they are open. Runs on onRequest, before the body is parsed or
 * validated, so an unauthenticated caller learns nothing about the inputs. Digests are compared
 * so the comparison is constant-time whatever the lengths.
 */
export function requireServiceCredential(service_token: string) {
  const expected =
    service_token === "" ? null : createHash("sha256").update(`Bearer ${service_token}`).digest();
  return async (request: FastifyRequest): Promise<void> => {
    if (expected === null) return;
    const given = createHash("sha256")
      .update(request.headers.authorization ?? "")
      .digest();
    if (!timingSafeEqual(given, expected)) {
      throw refuse("unauthorized", "a valid service credential is required", {
        "www-authenticate": "Bearer",
      });
    }
  };
}

// ---------------------------------------------------------------------------------------------
// Routes.

export interface RouteDeps {
  pool: Pool;
  service_token: string;
}

export function registerRoutes(app: HttpServer, deps: RouteDeps): void {
  const { pool } = deps;
  const userResponse = envelope(z.object({ user: userSchema }));

  app.post(
    "/users",
    { schema: { body: createUserBody, response: { 201: userResponse } } },
    async (request, reply) => {
      const { username, password, balance } = request.body;
      const password_hash = await hashPassword(password);
      const row = await createUser(pool, { username, password_hash, opening_balance: balance ?? 0 });
      return reply.status(201).send(ok({ user: toApiUser(row) }));
    },
  );

  app.get(
    "/users",
    {
      schema: {
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
          ),
        },
      },
    },
    async (request) => {
      const { limit, cursor } = request.query;
      const page = await listUsers(pool, { limit, after_id: cursor ?? 0 });
      const last = page.rows.at(-1);
      return ok({
        users: page.rows.map(toApiUser),
        pagination: { limit, next_cursor: page.has_more && last ? last.id : null, has_more: page.has_more },
      });
    },
  );

  app.get(
    "/users/:id",
    { schema: { params: userParams, response: { 200: userResponse } } },
    async (request) => {
      const row = await getUser(pool, request.params.id);
      if (row === null) throw refuse("user_not_found", `user ${request.params.id} not found`);
      return ok({ user: toApiUser(row) });
    },
  );

  app.put(
    "/users/:id",
    { schema: { params: userParams, body: updateUserBody, response: { 200: userResponse } } },
    async (request) => {
      const { username, password } = request.body;
      const password_hash = password === undefined ? undefined : await hashPassword(password);
      const row = await updateUser(pool, request.params.id, { username, password_hash });
      return ok({ user: toApiUser(row) });
    },
  );

  app.delete(
    "/users/:id",
    {
      schema: {
        params: userParams,
        response: { 200: envelope(z.object({ user: userSchema, deleted_at: isoDate })) },
      },
    },
    async (request) => {
      const row = await closeUser(pool, request.params.id);
      return ok({ user: toApiUser(row), deleted_at: row.deleted_at.toISOString() });
    },
  );

  app.post(
    "/users/:id/balance/add",
    {
      schema: {
        params: userParams,
        headers: depositHeaders,
        body: depositBody,
        response: { 200: envelope(z.object({ user: userSchema, deposit: depositSchema })) },
      },
    },
    async (request, reply) => {
      const result = await deposit(pool, {
        user_id: request.params.id,
        amount: request.body.amount,
        idempotency_key: request.headers["idempotency-key"] ?? null,
      });
      // Stripe's convention: tell the client this answer is the first request's.
      if (result.replayed) reply.header("idempotent-replayed", "true");
      return ok({ user: toApiUser(result.user), deposit: toApiDeposit(result.deposit) });
    },
  );

  app.register(
    async (plugin) => {
      // A plugin scope starts without the type provider; this restores typed zod requests.
      const internal = plugin.withTypeProvider<ZodTypeProvider>();
      internal.addHook("onRequest", requireServiceCredential(deps.service_token));
      const holdResponse = envelope(z.object({ hold: holdSchema }));

      internal.post(
        "/transfers/:transfer_id/hold",
        { schema: { params: transferParams, body: holdBody, response: { 200: holdResponse } } },
        async (request) => {
          const hold = await holdFunds(pool, { transfer_id: request.params.transfer_id, ...request.body });
          return ok({ hold: toApiHold(hold) });
        },
      );

      internal.post(
        "/transfers/:transfer_id/post",
        { schema: { params: transferParams, body: noBody, response: { 200: holdResponse } } },
        async (request) => ok({ hold: toApiHold(await postHold(pool, request.params.transfer_id)) }),
      );

      internal.post(
        "/transfers/:transfer_id/void",
        { schema: { params: transferParams, body: noBody, response: { 200: holdResponse } } },
        async (request) => ok({ hold: toApiHold(await voidHold(pool, request.params.transfer_id)) }),
      );

      internal.get(
        "/transfers/:transfer_id",
        { schema: { params: transferParams, response: { 200: holdResponse } } },
        async (request) => {
          const hold = await getHold(pool, request.params.transfer_id);
          if (hold === null)
            throw refuse("hold_not_found", `no hold for transfer ${request.params.transfer_id}`);
          return ok({ hold: toApiHold(hold) });
        },
      );

      internal.get("/audit", { schema: { response: { 200: envelope(auditSchema) } } }, async () =>
        ok(await audit(pool)),
      );
    },
    { prefix: "/internal" },
  );
}
