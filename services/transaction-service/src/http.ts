/**
 * The public API: transfers in (with idempotency keys), transfers out (through the cache and
 * the query service). Reads fall back to the saga's own row when the record is not written yet
 * or the query service cannot answer, so a client can always read back what it just created.
 */
import type { FastifyBaseLogger, FastifyReply } from "fastify";
import { z } from "zod";
import { transferIdSchema, userIdParamSchema, userIdSchema } from "#packages/contracts/ids.ts";
import { amountMinorSchema } from "#packages/contracts/money.ts";
import { canonicalCursor, listQuerySchema, paginationSchema } from "#packages/contracts/pagination.ts";
import { redactFor, type TransferSnapshot, transferSnapshotSchema } from "#packages/contracts/transfer.ts";
import {
  type Authenticator,
  forbidden,
  type Principal,
  requirePrincipal,
  requireSelfOrAdmin,
  securityFor,
} from "#packages/http/auth.ts";
import { ApiError, notFound, ok } from "#packages/http/errors.ts";
import { BODY_ERRORS, envelope, errorResponses } from "#packages/http/openapi.ts";
import type { RateLimiter } from "#packages/http/rate-limit.ts";
import { type HttpServer, refuseMethod } from "#packages/http/server.ts";
import type { Logger } from "#packages/log/index.ts";
import type { TransferCache } from "./cache.ts";
import { httpAnswer } from "./idempotent-submission.ts";
import type { QueryClient } from "./query-client.ts";
import { snapshotOf } from "./saga/machine.ts";
import type { SagaRunner } from "./saga/runner.ts";
import type { SagaStore } from "./saga/store.ts";
import { submitTransfer } from "./saga/submission.ts";
import type { FinalStatusWaiters } from "./waiting.ts";
import { transferWait, waitAsPreferred } from "./waiting-read.ts";

export const transferBodySchema = z.strictObject({
  source_user_id: userIdSchema,
  dest_user_id: userIdSchema,
  amount: amountMinorSchema,
});

const idempotencyKeySchema = z
  .string()
  .min(1, { error: "must not be empty" })
  .max(255, { error: "must be at most 255 characters" })
  .regex(/^[\x21-\x7e]+$/, { error: "must be printable ASCII without spaces" });

/**
 * The answer when PostgreSQL failed around the commit of a new transfer and reading it back did
 * not tell whether it exists: not a plain "retry" (a keyless retry could pay twice), but its id,
 * so the client can look before sending it again.
 */
function outcomeUnknown(transfer_id: string): ApiError {
  return new ApiError(
    503,
    "transfer_outcome_unknown",
    `transfer ${transfer_id} may have been created: read GET /transactions/${transfer_id} before sending ` +
      "the request again (404 there means it was not created); an Idempotency-Key makes retries safe",
    { details: { transaction_id: transfer_id } },
  );
}

/** A user sees a transfer only if they sent or received it; the operator sees all. */
function requireParty(principal: Principal, transaction: TransferSnapshot): void {
  if (principal.kind === "admin") return;
  if (
    principal.kind === "user" &&
    (principal.user_id === transaction.source_user_id || principal.user_id === transaction.dest_user_id)
  )
    return;
  throw forbidden(`transaction ${transaction.id} belongs to other users`);
}

const transactionResponse = envelope(z.object({ transaction: transferSnapshotSchema }));
const listResponse = envelope(
  z.object({ transactions: z.array(transferSnapshotSchema), pagination: paginationSchema }),
);

/**
 * A transfer answer whose status is decided at run time (201, or a refusal with the transfer in
 * `details`), or replayed as first given: the route's response schemas still check it on the way out.
 */
function sendAs(reply: FastifyReply, status: number, body: unknown) {
  return (reply as unknown as FastifyReply).status(status).send(body);
}

type RouteDeps = {
  store: SagaStore;
  runner: SagaRunner;
  cache: TransferCache;
  query: QueryClient;
  logger: Logger;
  step_timeout_ms: number;
  auth: Authenticator;
  limiter: RateLimiter;
  waiters: FinalStatusWaiters;
};

type RequestHook = ReturnType<RateLimiter["guard"]>;

export function registerRoutes(app: HttpServer, deps: RouteDeps): void {
  // Authentication and the per-user rate limit, before the body is read.
  registerSubmitRoute(app, deps, deps.limiter.guard(deps.auth, "user"));
  registerReadRoutes(app, deps, deps.limiter.guard(deps.auth, "user", "admin"));
}

/** POST /transactions/transfer, and the 405 for its other methods. */
function registerSubmitRoute(app: HttpServer, deps: RouteDeps, limited: RequestHook): void {
  app.post(
    "/transactions/transfer",
    {
      // Only the owner's token spends from a wallet: the operator credential is refused (403)
      // here, so every debit is traceable to the user who authorised it.
      onRequest: limited,
      schema: {
        summary: "Transfer from the caller's wallet to another user's (optional Idempotency-Key)",
        description:
          "Idempotency keys are scoped to the caller: the same key and body replay the first answer " +
          "(header Idempotent-Replayed: true); the same key with another body is refused with 422.",
        tags: ["transactions"],
        security: securityFor("user"),
        body: transferBodySchema,
        headers: z.object({ "idempotency-key": idempotencyKeySchema.optional() }),
        response: {
          201: transactionResponse.describe(
            "Accepted: the transfer (PENDING, or already final); poll GET /transactions/{id}",
          ),
          ...errorResponses(BODY_ERRORS, 401, 429, {
            403: "`source_user_id` is not the caller's wallet, or the credential is not a user's token",
            404: "The payer or payee does not exist (`details.transaction` is the FAILED transfer)",
            409: "A request with this Idempotency-Key is still in progress (Retry-After)",
            422: "Insufficient funds (`details.transaction`), the same wallet on both sides, or an Idempotency-Key reused with another body",
            503: "PostgreSQL failed around the commit and the transfer may exist (`details.transaction_id`): read it before sending again",
          }),
        },
      },
    },
    async (request, reply) => {
      const principal = requirePrincipal(request);
      const body = request.body;
      if (principal.kind !== "user" || principal.user_id !== body.source_user_id) {
        throw forbidden(`only the owner of wallet ${body.source_user_id} may transfer from it`);
      }
      if (body.source_user_id === body.dest_user_id) {
        throw new ApiError(422, "same_wallet", "source_user_id and dest_user_id must differ");
      }
      const given = request.headers["idempotency-key"];
      const outcome = await submitTransfer(
        deps,
        { user_id: principal.user_id, idempotency_key: given, body },
        request.log,
      );
      if (outcome.kind === "outcome_unknown") throw outcomeUnknown(outcome.transfer_id);
      const answer = httpAnswer(outcome, "transaction_id");
      if (answer.replayed) reply.header("idempotent-replayed", "true");
      return sendAs(reply, answer.status, answer.body);
    },
  );

  refuseMethod(app, "GET", "/transactions/transfer", ["POST"]);
}

/** A transfer, and a user's transfers. */
function registerReadRoutes(app: HttpServer, deps: RouteDeps, userOrAdmin: RequestHook): void {
  app.get(
    "/transactions/:id",
    {
      onRequest: userOrAdmin,
      schema: {
        summary: "Read a transfer (its payer or payee, or the operator)",
        tags: ["transactions"],
        security: securityFor("user", "admin"),
        description:
          "`Prefer: wait=N` (N at most 30 seconds) holds the answer until the status is final or N seconds " +
          "have passed, and says so with `Preference-Applied: wait=N`; beyond the waiting limits the answer is immediate.",
        params: z.strictObject({ id: transferIdSchema }),
        headers: z.object({ prefer: z.string().optional() }),
        response: {
          200: transactionResponse.describe("The transfer"),
          ...errorResponses(400, 401, 429, {
            403: "The transfer is between other users",
            404: "No such transfer",
          }),
        },
      },
    },
    async (request, reply) => {
      const principal = requirePrincipal(request);
      const { id } = request.params;
      const first = await readTransfer(deps, id, request.log);
      requireParty(principal, first);
      const transaction = await waitAsPreferred(request, reply, {
        waiters: deps.waiters,
        principal,
        kind: "transfer",
        id,
        first,
        ...transferWait(deps.store, id, first),
      });
      return ok({ transaction: redactFor(principal, transaction) });
    },
  );

  app.get(
    "/transactions/user/:user_id",
    {
      onRequest: userOrAdmin,
      schema: {
        summary: "A user's transfers, sent and received, newest first (the user, or the operator)",
        tags: ["transactions"],
        security: securityFor("user", "admin"),
        params: z.strictObject({ user_id: userIdParamSchema }),
        querystring: listQuerySchema,
        response: {
          200: listResponse.describe("A page; pass `pagination.next_cursor` as `cursor` for the next one"),
          ...errorResponses(400, 401, 429, {
            403: "Another user's transfers",
            503: "The transfer history is temporarily unavailable (Retry-After)",
          }),
        },
      },
    },
    async (request) => {
      const user_id = request.params.user_id;
      const principal = requirePrincipal(request);
      requireSelfOrAdmin(principal, user_id, `the transfer history of user ${user_id}`);
      const page = await readPage(deps, user_id, canonicalQuery(request.query), request.log);
      return {
        ...page,
        data: { ...page.data, transactions: page.data.transactions.map((t) => redactFor(principal, t)) },
      };
    },
  );
}

type ReadDeps = { cache: TransferCache; query: QueryClient; store: SagaStore };

/** The transfer from Redis, else the query service (then cached), else the saga's own row. */
async function readTransfer(deps: ReadDeps, id: string, log: FastifyBaseLogger): Promise<TransferSnapshot> {
  const cached = await deps.cache.getTransfer(id);
  if (cached !== null) return cached;
  try {
    const answer = await deps.query.getTransfer(id);
    if (answer.status === 200) {
      const transaction = transferSnapshotSchema.parse(
        (answer.body as { data: { transaction: unknown } }).data.transaction,
      );
      await deps.cache.putTransfer(transaction);
      return transaction;
    }
    if (answer.status !== 404)
      log.warn({ status: answer.status }, "query service error; reading the saga row");
  } catch (error) {
    log.warn({ err: error }, "query service unreachable; reading the saga row");
  }
  const transfer = await deps.store.get(id);
  if (transfer === null) throw notFound(`transaction ${id}`);
  return snapshotOf(transfer);
}

type ListQuery = { limit: number; cursor?: string | undefined };
type Page = z.infer<typeof listResponse>;

/** One spelling per page (the cursor re-encoded), so the cache and the query service see one query. */
function canonicalQuery(query: ListQuery): ListQuery {
  const cursor = query.cursor === undefined ? null : canonicalCursor(query.cursor);
  return cursor === null ? { limit: query.limit } : { limit: query.limit, cursor };
}

/** A page of a user's transfers, whole (redaction is the caller's): from Redis, else the query service. */
async function readPage(
  deps: ReadDeps,
  user_id: number,
  query: ListQuery,
  log: FastifyBaseLogger,
): Promise<Page> {
  const page_key = `${query.limit}:${query.cursor ?? ""}`;
  const lookup = await deps.cache.getList(user_id, page_key);
  const cached = listResponse.safeParse(lookup.page);
  if (cached.success) return cached.data;
  const unavailable = new ApiError(
    503,
    "query_unavailable",
    "transaction history is temporarily unavailable",
    {
      headers: { "retry-after": "1" },
    },
  );
  const answer = await deps.query.listUserTransfers(user_id, query).catch((error: unknown) => {
    log.warn({ err: error }, "query service unreachable on list");
    throw unavailable;
  });
  const page = listResponse.safeParse(answer.body);
  if (answer.status !== 200 || !page.success) {
    log.warn({ status: answer.status }, "query service error on list");
    throw unavailable;
  }
  await deps.cache.putList(user_id, lookup, page_key, page.data);
  return page.data;
}
