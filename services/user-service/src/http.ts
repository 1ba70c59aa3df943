/**
 * The HTTP API of user-service: zod schemas validate every input before any query (unknown
 * fields refused), and describe every success response, so the serializer drops anything a
 * handler did not mean to send. Refusals are ApiErrors, rendered by the shared error handler.
 */
import type { ZodTypeProvider } from "fastify-type-provider-zod";
import { z } from "zod";
import { transferIdSchema, userIdParamSchema, userIdSchema } from "#packages/contracts/ids.ts";
import { amountMinorSchema, balanceMinorSchema } from "#packages/contracts/money.ts";
import {
  type Authenticator,
  forbidden,
  issuedTokenSchema,
  principalOf,
  requirePrincipal,
  requireSelfOrAdmin,
  securityFor,
} from "#packages/http/auth.ts";
import { ApiError, ok } from "#packages/http/errors.ts";
import { BODY_ERRORS, envelope, errorResponses } from "#packages/http/openapi.ts";
import type { RateLimiter } from "#packages/http/rate-limit.ts";
import { type Listeners, refuseMethod } from "#packages/http/server.ts";
import type { Metrics } from "#packages/metrics/index.ts";
import type { Pool } from "#packages/pg/index.ts";
import { assert } from "#packages/runtime/assert.ts";
import {
  hashBelowCost,
  hashPassword,
  idempotencyKeySchema,
  type PasswordHasher,
  pageLimitSchema,
  passwordSchema,
  refuse,
  toApiDeposit,
  toApiHold,
  toApiUser,
  usernameSchema,
} from "./domain.ts";
import {
  applyBatch,
  audit,
  closeUser,
  createUser,
  deposit,
  findCredentials,
  getHold,
  getUser,
  holdFunds,
  LEDGER_BATCH_MAX,
  type LedgerOperation,
  listUsers,
  passwordHashOf,
  postHold,
  setLocked,
  updateUser,
  upgradePasswordHash,
  voidHold,
} from "./ledger.ts";
import { timedBatch } from "./metrics.ts";
import type { Revocations } from "./revocation.ts";

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

const ledgerOpSchema = z.enum(["hold", "post", "void"]);

/** One step's answer in a batch: the hold as it now stands, or the refusal (same codes as the single-step routes). */
const batchResultSchema = z.discriminatedUnion("ok", [
  z.object({ transfer_id: transferIdSchema, op: ledgerOpSchema, ok: z.literal(true), hold: holdSchema }),
  z.object({
    transfer_id: transferIdSchema,
    op: ledgerOpSchema,
    ok: z.literal(false),
    code: z.string(),
    message: z.string(),
  }),
]);

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
  .strictObject({
    username: usernameSchema.optional(),
    password: passwordSchema.optional(),
    /** Required with `password`: a stolen access token alone cannot take the account over. */
    current_password: z.string().min(1).max(256).optional(),
  })
  .refine((body) => body.username !== undefined || body.password !== undefined, {
    error: "give username, password or both",
  })
  // The refinement, as the OpenAPI document can say it (current_password alone changes nothing).
  .meta({ anyOf: [{ required: ["username"] }, { required: ["password"] }] });

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
const batchBody = z.strictObject({
  operations: z
    .array(
      z.discriminatedUnion("op", [
        holdBody.extend({ op: z.literal("hold"), transfer_id: transferIdSchema }),
        z.strictObject({ op: z.literal("post"), transfer_id: transferIdSchema }),
        z.strictObject({ op: z.literal("void"), transfer_id: transferIdSchema }),
      ]),
    )
    .min(1)
    .max(LEDGER_BATCH_MAX),
});
// post and void take no input but the path; their body is `{}` (what the OpenAPI document can say:
// with a body schema, a request body is required).
const emptyBody = z.strictObject({});

/**
 * Login takes any username and password up to the sign-up limits: a malformed one simply matches
 * nobody, and is answered like any wrong credential (401), so the rules leak nothing either.
 */
const loginBody = z.strictObject({
  username: z.string().min(1).max(256),
  password: z.string().min(1).max(256),
});

// ---------------------------------------------------------------------------------------------
// Routes.

export interface RouteDeps {
  pool: Pool;
  auth: Authenticator;
  hasher: PasswordHasher;
  revocations: Revocations;
  /** Log-ins and sign-ups per client address, and attempts per username (a success resets it). */
  limits: { address: RateLimiter; username: RateLimiter };
  metrics?: Metrics;
}

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
  const { pool, auth, hasher, revocations, limits } = deps;
  const app = listeners.public;
  const userResponse = envelope(z.object({ user: userSchema }));
  const userOrAdmin = auth.guard("user", "admin");
  const adminOnly = auth.guard("admin");
  // A wrong password costs one scrypt; so does an unknown username (against this dummy hash),
  // so the answer time does not tell which usernames exist.
  const dummyHash = hashPassword(`no user ${Math.random()}`, hasher.log2_n);
  /** Per client address, then per username: 429 with Retry-After past either. */
  const throttle = async (request: { ip: string }, username_key: string): Promise<void> => {
    await limits.address.enforce(`auth:address:${request.ip}`);
    await limits.username.enforce(username_key);
  };

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
      await throttle(request, username_key);
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
        await upgradeHash(found.id, found.password_hash, password);
      const version = await revocations.issueVersion(found.id, found.token_version);
      const token = await auth.issueUserToken(found.id, version);
      return ok({ ...token, user_id: found.id });
    },
  );

  /** A hash below the configured cost is replaced at login, the only time the password is known. */
  const upgradeHash = async (user_id: number, old_hash: string, password: string): Promise<void> => {
    try {
      await upgradePasswordHash(pool, user_id, old_hash, await hasher.hash(password));
    } catch (error) {
      // The login itself succeeded; the next one tries again.
      app.log.warn({ err: error, user_id }, "password hash upgrade skipped");
    }
  };

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
        await throttle(request, `signup:username:${username.toLowerCase()}`);
      }
      const password_hash = await hasher.hash(password);
      const row = await createUser(pool, { username, password_hash, opening_balance: balance ?? 0 });
      return reply.status(201).send(ok({ user: toApiUser(row) }));
    },
  );

  app.get(
    "/users",
    {
      onRequest: adminOnly,
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
    {
      onRequest: userOrAdmin,
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
      const row = await getUser(pool, request.params.id);
      if (row === null) throw refuse("user_not_found", `user ${request.params.id} not found`);
      return ok({ user: toApiUser(row) });
    },
  );

  app.put(
    "/users/:id",
    {
      onRequest: userOrAdmin,
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
      if (password !== undefined) await checkPasswordChange(principal.kind, id, current_password);
      const password_hash = password === undefined ? undefined : await hasher.hash(password);
      const row = await updateUser(pool, id, { username, password_hash }, revocations.publish);
      if (password_hash !== undefined) await revocations.settle();
      return ok({ user: toApiUser(row) });
    },
  );

  /**
   * Only the user sets their password, and only with the current one: neither the operator nor a
   * stolen access token can take a wallet over. Wrong guesses count against the user's limit.
   */
  const checkPasswordChange = async (
    kind: string,
    id: number,
    current: string | undefined,
  ): Promise<void> => {
    if (kind !== "user") {
      throw forbidden("the operator cannot set or reset a password; lock the account instead");
    }
    // 403 rather than 400: the body is well-formed, but this caller has not proved enough.
    if (current === undefined) {
      throw refuse("current_password_required", "changing the password needs current_password in the body");
    }
    const key = `password:user:${id}`;
    await limits.username.enforce(key);
    const stored = await passwordHashOf(pool, id);
    if (stored === null) throw refuse("user_not_found", `user ${id} not found`);
    if (!(await hasher.verify(current, stored))) {
      throw refuse("current_password_mismatch", "current_password is not this user's password");
    }
    await limits.username.reset(key);
  };

  for (const [action, locked] of [
    ["lock", true],
    ["unlock", false],
  ] as const) {
    app.post(
      `/users/:id/${action}`,
      {
        onRequest: adminOnly,
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
        const row = await setLocked(pool, request.params.id, locked, revocations.publish);
        if (locked) await revocations.settle();
        return ok({ user: toApiUser(row), locked });
      },
    );
  }

  app.delete(
    "/users/:id",
    {
      onRequest: userOrAdmin,
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
      const row = await closeUser(pool, request.params.id);
      return ok({ user: toApiUser(row), deleted_at: row.deleted_at.toISOString() });
    },
  );

  app.post(
    "/users/:id/balance/add",
    {
      onRequest: adminOnly,
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

  listeners.internal.register(
    async (plugin) => {
      // A plugin scope starts without the type provider; this restores typed zod requests.
      const internal = plugin.withTypeProvider<ZodTypeProvider>();
      // The saga's credential only: a user's token, the operator's or the read side's cannot move money.
      const ledgerOnly = { onRequest: auth.guard("ledger") };
      const holdResponse = envelope(z.object({ hold: holdSchema })).describe("The hold as it now stands");
      const internalSchema = { tags: ["internal"], security: securityFor("ledger") };
      const holdErrors = {
        404: "No such hold, source or destination (see `code`)",
        409: "The hold is in another state, or does not match (see `code`)",
        422: "Insufficient funds, or source and destination are the same wallet",
      };

      internal.post(
        "/transfers/:transfer_id/hold",
        {
          ...ledgerOnly,
          schema: {
            ...internalSchema,
            summary:
              "Saga step: move the amount from the source wallet to clearing (idempotent by transfer id)",
            params: transferParams,
            body: holdBody,
            response: { 200: holdResponse, ...errorResponses(BODY_ERRORS, 401, 403, holdErrors) },
          },
        },
        async (request) => {
          const hold = await holdFunds(pool, { transfer_id: request.params.transfer_id, ...request.body });
          return ok({ hold: toApiHold(hold) });
        },
      );

      internal.post(
        "/transfers/:transfer_id/post",
        {
          ...ledgerOnly,
          schema: {
            ...internalSchema,
            summary: "Saga step: move the held amount from clearing to the destination (idempotent)",
            params: transferParams,
            body: emptyBody,
            response: { 200: holdResponse, ...errorResponses(BODY_ERRORS, 401, 403, holdErrors) },
          },
        },
        async (request) => ok({ hold: toApiHold(await postHold(pool, request.params.transfer_id)) }),
      );

      internal.post(
        "/transfers/:transfer_id/void",
        {
          ...ledgerOnly,
          schema: {
            ...internalSchema,
            summary: "Saga step: give the held amount back to the source (idempotent)",
            params: transferParams,
            body: emptyBody,
            response: { 200: holdResponse, ...errorResponses(BODY_ERRORS, 401, 403, holdErrors) },
          },
        },
        async (request) => ok({ hold: toApiHold(await voidHold(pool, request.params.transfer_id)) }),
      );

      internal.post(
        "/transfers/batch",
        {
          ...ledgerOnly,
          schema: {
            ...internalSchema,
            summary: `Saga steps in one transaction: up to ${LEDGER_BATCH_MAX} holds, posts and voids, one result each (one step per transfer)`,
            body: batchBody,
            response: {
              200: envelope(z.object({ results: z.array(batchResultSchema) })).describe(
                "One result per operation, in input order: the hold as it now stands, or the refusal (`code` as the single-step routes answer it). A refusal changes nothing and does not affect the other operations. The operations are applied in lock order (by wallet, then transfer id), not in input order: none may count on another of its batch",
              ),
              ...errorResponses(BODY_ERRORS, 401, 403, {
                422: "A transfer appears more than once (one step per transfer per batch); nothing was applied",
              }),
            },
          },
        },
        async (request) => {
          const operations: LedgerOperation[] = request.body.operations;
          // One step per transfer: two steps of one transfer in one transaction would need an
          // order between them that the batch's lock order does not give. Well-formed, so 422.
          const first = new Map<string, number>();
          for (const [index, operation] of operations.entries()) {
            // UUIDs are equal whatever the case of their hex digits.
            const earlier = first.get(operation.transfer_id.toLowerCase());
            if (earlier !== undefined) {
              throw refuse(
                "transfer_repeated_in_batch",
                `operations.${index}.transfer_id: transfer ${operation.transfer_id} already appears at operations.${earlier}; one step per transfer per batch`,
              );
            }
            first.set(operation.transfer_id.toLowerCase(), index);
          }
          const results = await timedBatch(deps.metrics, operations.length, () =>
            applyBatch(pool, operations),
          );
          return ok({
            results: operations.map(({ transfer_id, op }, index) => {
              const result = results[index];
              assert(result !== undefined, `operation ${index} of the batch has no result`);
              return result.ok
                ? { transfer_id, op, ok: true as const, hold: toApiHold(result.hold) }
                : { transfer_id, op, ok: false as const, code: result.code, message: result.message };
            }),
          });
        },
      );

      internal.get(
        "/transfers/:transfer_id",
        {
          onRequest: auth.guard("ledger", "admin"),
          schema: {
            ...internalSchema,
            security: securityFor("ledger", "admin"),
            summary: "Read a transfer's hold",
            params: transferParams,
            response: {
              200: holdResponse,
              ...errorResponses(400, 401, 403, { 404: "No hold for this transfer" }),
            },
          },
        },
        async (request) => {
          const hold = await getHold(pool, request.params.transfer_id);
          if (hold === null)
            throw refuse("hold_not_found", `no hold for transfer ${request.params.transfer_id}`);
          return ok({ hold: toApiHold(hold) });
        },
      );

      internal.get(
        "/audit",
        {
          onRequest: auth.guard("admin"),
          schema: {
            ...internalSchema,
            security: securityFor("admin"),
            summary: "The ledger's consistency figures (I1, I2, I6) from one snapshot",
            response: { 200: envelope(auditSchema).describe("The figures"), ...errorResponses(401, 403) },
          },
        },
        async () => ok(await audit(pool)),
      );
    },
    { prefix: "/internal" },
  );
  // GET /internal/transfers/batch would otherwise be read as the hold of transfer "batch".
  refuseMethod(listeners.internal, "GET", "/internal/transfers/batch", ["POST"]);
}
