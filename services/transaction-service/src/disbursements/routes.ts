/**
 * The disbursement API: `POST /disbursements` (the payer's token, Idempotency-Key required),
 * `GET /disbursements/:id`, `GET /disbursements/:id/items`, `GET /disbursements` (the payer's,
 * newest first). Items are ordinary transfers: their payees read them at GET /transactions/:id.
 */
import { createHash } from "node:crypto";
import type { FastifyReply } from "fastify";
import { z } from "zod";
import {
  type DisbursementSnapshot,
  disbursementSchema,
  disbursementView,
  type ItemsPage,
  type ItemsQuery,
  itemsPageSchema,
  itemsQuerySchema,
} from "#packages/contracts/disbursement.ts";
import { transferIdSchema, userIdSchema, uuidv7 } from "#packages/contracts/ids.ts";
import { AMOUNT_MAX_MINOR, amountMinorSchema } from "#packages/contracts/money.ts";
import { decodeCursor, listQuerySchema, paginationSchema } from "#packages/contracts/pagination.ts";
import { redactFor } from "#packages/contracts/transfer.ts";
import {
  type Authenticator,
  forbidden,
  type Principal,
  requirePrincipal,
  securityFor,
} from "#packages/http/auth.ts";
import { ApiError, errorBody, notFound, ok } from "#packages/http/errors.ts";
import { BODY_ERRORS, envelope, errorResponses } from "#packages/http/openapi.ts";
import type { RateLimiter } from "#packages/http/rate-limit.ts";
import type { HttpServer } from "#packages/http/server.ts";
import { assert } from "#packages/runtime/assert.ts";
import { httpAnswer, type SubmissionOutcome, submitIdempotently } from "../idempotent-submission.ts";
import { snapshotOf } from "../saga/machine.ts";
import type { SagaStore } from "../saga/store.ts";
import type { FinalStatusWaiters } from "../waiting.ts";
import { waitAsPreferred } from "../waiting-read.ts";
import type { DisbursementFunder } from "./funding.ts";
import type { DisbursementReads } from "./reads.ts";
import type { Disbursement, DisbursementStore } from "./store.ts";

/** The most items in one disbursement (Wise's batch groups hold as many). */
export const DISBURSEMENT_ITEMS_MAX = 1_000;

const printable = (what: string) =>
  z
    .string()
    .min(1, { error: `${what} must not be empty` })
    .max(255, { error: `${what} must be at most 255 characters` })
    .regex(/^[\x20-\x7e]+$/, { error: `${what} must be printable ASCII` });

export const disbursementBodySchema = z.strictObject({
  source_user_id: userIdSchema,
  reference: printable("reference").optional(),
  items: z
    .array(
      z.strictObject({
        dest_user_id: userIdSchema,
        amount: amountMinorSchema,
        reference: printable("reference"),
      }),
    )
    .min(1, { error: "give at least one item" })
    .max(DISBURSEMENT_ITEMS_MAX, { error: `give at most ${DISBURSEMENT_ITEMS_MAX} items` }),
});
type DisbursementBody = z.infer<typeof disbursementBodySchema>;

const idempotencyKeySchema = z
  .string({ error: "Idempotency-Key is required" })
  .regex(/^[\x21-\x7e]{1,255}$/, { error: "must be 1-255 printable ASCII characters without spaces" });

const oneResponse = envelope(z.object({ disbursement: disbursementSchema }));

function toApi(d: Disbursement): z.infer<typeof disbursementSchema> {
  return {
    id: d.id,
    status: d.status,
    reference: d.reference,
    source_user_id: d.source_user_id,
    item_count: d.item_count,
    total_amount: d.total_amount,
    counts: d.counts,
    amount_completed: d.amount_completed,
    amount_refunded: d.amount_refunded,
    failure_reason: d.failure_reason,
    created_at: d.created_at,
    updated_at: d.updated_at,
  };
}

/** The first answer to a POST, given where the disbursement stands. */
export function responseFor(d: Disbursement): { status: number; body: unknown } {
  const disbursement = toApi(d);
  if (d.state === "refused" && d.failure_reason === "insufficient_funds") {
    const message = `user ${d.source_user_id} has insufficient funds for the total ${d.total_amount}`;
    return {
      status: 422,
      body: errorBody("insufficient_funds", message, { disbursement, total_amount: d.total_amount }),
    };
  }
  if (d.state === "refused") {
    return {
      status: 404,
      body: errorBody("source_not_found", `user ${d.source_user_id} not found`, { disbursement }),
    };
  }
  return { status: 201, body: ok({ disbursement }) };
}

export function fingerprint(body: DisbursementBody): string {
  const canonical = [
    body.source_user_id,
    body.reference ?? null,
    body.items.map((i) => [i.dest_user_id, i.amount, i.reference]),
  ];
  return createHash("sha256").update(JSON.stringify(canonical)).digest("hex");
}

/** What a schema cannot say: each names the item at fault. Nothing is written before this passes. */
export function checkItems(body: DisbursementBody): bigint {
  const references = new Map<string, number>();
  let total = 0n;
  for (const [index, item] of body.items.entries()) {
    if (item.dest_user_id === body.source_user_id) {
      throw new ApiError(422, "same_wallet", `items.${index}.dest_user_id: the payer cannot be a payee`);
    }
    const earlier = references.get(item.reference);
    if (earlier !== undefined) {
      throw new ApiError(
        422,
        "duplicate_reference",
        `items.${index}.reference: '${item.reference}' is already the reference of items.${earlier}`,
      );
    }
    references.set(item.reference, index);
    total += BigInt(item.amount);
  }
  if (total > BigInt(AMOUNT_MAX_MINOR)) {
    throw new ApiError(
      422,
      "total_too_large",
      `items: the amounts total ${total}, more than ${AMOUNT_MAX_MINOR} minor units`,
    );
  }
  return total;
}

/** The payer (or the operator) only. */
function requireOwner(principal: Principal, d: Pick<Disbursement, "id" | "source_user_id">): void {
  if (principal.kind === "admin") return;
  if (principal.kind === "user" && principal.user_id === d.source_user_id) return;
  throw forbidden(`disbursement ${d.id} belongs to another user`);
}

function sendAs(reply: FastifyReply, status: number, body: unknown) {
  return (reply as unknown as FastifyReply).status(status).send(body);
}

/** Creates the disbursement (or finds the one the key names) and funds it while the client waits. */
function submitDisbursement(
  deps: { store: DisbursementStore; funder: DisbursementFunder; step_timeout_ms: number },
  request: {
    idempotency_key: string;
    body: DisbursementBody;
    total: bigint;
    log: { warn(fields: Record<string, unknown>, message: string): void };
  },
): Promise<SubmissionOutcome> {
  const { body, log } = request;
  const print = fingerprint(body);
  return submitIdempotently({
    fingerprint: print,
    createOrGet: async () => {
      const { created, disbursement, age_ms } = await deps.store.createOrGet({
        id: uuidv7(),
        idempotency_key: request.idempotency_key,
        request_fingerprint: print,
        source_user_id: body.source_user_id,
        reference: body.reference ?? null,
        items: body.items.map((item) => ({ transfer_id: uuidv7(), ...item })),
        total_amount: Number(request.total),
        funding_timeout_ms: deps.step_timeout_ms,
      });
      return { created, record: disbursement, age_ms };
    },
    drive: (disbursement) =>
      deps.funder.fund(disbursement).catch((error: unknown) => {
        log.warn(
          { err: error, disbursement_id: disbursement.id },
          "funding not confirmed in time; left to the sweep",
        );
        return disbursement;
      }),
    answerFor: responseFor,
    saveAnswer: (id, answer) => deps.store.saveResponse(id, answer.status, answer.body),
    log,
    id_field: "disbursement_id",
  });
}

type DisbursementRouteDeps = {
  store: DisbursementStore;
  saga: SagaStore;
  funder: DisbursementFunder;
  auth: Authenticator;
  limiter: RateLimiter;
  waiters: FinalStatusWaiters;
  reads: DisbursementReads;
  step_timeout_ms: number;
};

/** The request hooks the routes share, each a guard with the rate limit: the payer's, and payer-or-operator. */
type DisbursementHooks = {
  limited: ReturnType<RateLimiter["guard"]>;
  userOrAdmin: ReturnType<RateLimiter["guard"]>;
};

const idParams = z.strictObject({ id: transferIdSchema });

export function registerDisbursementRoutes(app: HttpServer, deps: DisbursementRouteDeps): void {
  const hooks: DisbursementHooks = {
    limited: deps.limiter.guard(deps.auth, "user"),
    userOrAdmin: deps.limiter.guard(deps.auth, "user", "admin"),
  };
  registerCreateRoute(app, deps, hooks);
  registerOneRoute(app, deps, hooks);
  registerItemsRoute(app, deps, hooks);
  registerListRoute(app, deps, hooks);
}

function registerCreateRoute(
  app: HttpServer,
  deps: DisbursementRouteDeps,
  { limited }: DisbursementHooks,
): void {
  app.post(
    "/disbursements",
    {
      // 1,000 items with 255-character references: above the listener's default limit.
      bodyLimit: 512 * 1024,
      onRequest: limited,
      schema: {
        summary: `Pay up to ${DISBURSEMENT_ITEMS_MAX} users from the caller's wallet, funded all or nothing (Idempotency-Key required)`,
        description:
          "The whole batch is held from the payer's wallet in one ledger commit, or nothing moves (422 " +
          "`insufficient_funds` with the total). Each item then is an ordinary transfer, credited on its own; " +
          "an item whose payee cannot be credited ends FAILED and its amount stays with the payer. The same " +
          "key and body replay the first answer; the same key with another body is 422.",
        tags: ["disbursements"],
        security: securityFor("user"),
        body: disbursementBodySchema,
        headers: z.object({ "idempotency-key": idempotencyKeySchema }),
        response: {
          201: oneResponse.describe("Accepted and funded (or funding): the disbursement"),
          ...errorResponses(BODY_ERRORS, 401, 429, {
            403: "`source_user_id` is not the caller's wallet, or the credential is not a user's token",
            404: "The payer does not exist (closed)",
            409: "A request with this Idempotency-Key is still in progress (Retry-After)",
            422: "Insufficient funds for the total, an item at fault (the message names `items.N`), or the key reused with another body",
          }),
        },
      },
    },
    async (request, reply) => {
      const principal = requirePrincipal(request);
      const body = request.body;
      if (principal.kind !== "user" || principal.user_id !== body.source_user_id) {
        throw forbidden(`only the owner of wallet ${body.source_user_id} may disburse from it`);
      }
      const total = checkItems(body);
      const outcome = await submitDisbursement(deps, {
        idempotency_key: `user:${principal.user_id}:${request.headers["idempotency-key"]}`,
        body,
        total,
        log: request.log,
      });
      const answer = httpAnswer(outcome, "disbursement_id");
      if (answer.replayed) reply.header("idempotent-replayed", "true");
      return sendAs(reply, answer.status, answer.body);
    },
  );
}

function registerOneRoute(
  app: HttpServer,
  deps: DisbursementRouteDeps,
  { userOrAdmin }: DisbursementHooks,
): void {
  app.get(
    "/disbursements/:id",
    {
      onRequest: userOrAdmin,
      schema: {
        summary:
          "Read a disbursement: its status derived from its items, counts and amounts (the payer, or the operator)",
        description:
          "`Prefer: wait=N` (N at most 30 seconds) holds the answer until the batch is final or N seconds " +
          "have passed, and says so with `Preference-Applied: wait=N`; beyond the waiting limits the answer is immediate.",
        tags: ["disbursements"],
        security: securityFor("user", "admin"),
        params: idParams,
        headers: z.object({ prefer: z.string().optional() }),
        response: {
          200: oneResponse.describe("The disbursement"),
          ...errorResponses(400, 401, 429, {
            403: "Another user's disbursement",
            404: "No such disbursement",
          }),
        },
      },
    },
    async (request, reply) => {
      const { id } = request.params;
      const first = await deps.reads.one(id, request.log);
      if (first === null) throw notFound(`disbursement ${request.params.id}`);
      const principal = requirePrincipal(request);
      requireOwner(principal, first);
      // `Prefer: wait=N`: held until the batch is final (its last item's commit notifies every copy).
      const d = await waitAsPreferred<DisbursementSnapshot>(request, reply, {
        waiters: deps.waiters,
        principal,
        kind: "disbursement",
        id,
        first,
        read: async () => (await deps.reads.fromSaga(id)) ?? first,
        isFinal: (batch) => batch.status !== "PENDING",
      });
      return ok({ disbursement: disbursementView(d) });
    },
  );
}

function registerItemsRoute(
  app: HttpServer,
  deps: DisbursementRouteDeps,
  { userOrAdmin }: DisbursementHooks,
): void {
  app.get(
    "/disbursements/:id/items",
    {
      onRequest: userOrAdmin,
      schema: {
        summary:
          "A disbursement's items in batch order, each a transaction with its reference (the payer, or the operator)",
        tags: ["disbursements"],
        security: securityFor("user", "admin"),
        params: idParams,
        querystring: itemsQuerySchema,
        response: {
          200: envelope(itemsPageSchema).describe(
            "A page; pass `pagination.next_cursor` as `cursor` for the next one",
          ),
          ...errorResponses(400, 401, 429, {
            403: "Another user's disbursement",
            404: "No such disbursement",
          }),
        },
      },
    },
    async (request) => {
      const principal = requirePrincipal(request);
      const { id } = request.params;
      const d = await deps.reads.one(id, request.log);
      if (d === null) throw notFound(`disbursement ${request.params.id}`);
      requireOwner(principal, d);
      const page =
        (await deps.reads.items(d, request.query, request.log)) ??
        (await itemsFromSaga(deps, id, request.query));
      const items = page.items.map((item) => ({ ...item, ...redactFor(principal, item) }));
      return ok({ items, pagination: page.pagination });
    },
  );
}

/** A page of items from the saga's own rows: a batch still PENDING (items in `funding` have no record). */
async function itemsFromSaga(
  deps: Pick<DisbursementRouteDeps, "store" | "saga">,
  id: string,
  query: ItemsQuery,
): Promise<ItemsPage> {
  const { limit, cursor, status } = query;
  const page = await deps.store.itemPage(id, {
    limit,
    after_index: cursor === undefined ? -1 : Number(cursor),
    status: status ?? null,
  });
  const rows = await deps.saga.getMany(page.ids);
  const items = page.ids.map((item_id) => {
    const row = rows.get(item_id);
    assert(row !== undefined, `item ${item_id} of ${id} vanished`);
    return { ...snapshotOf(row), reference: page.references.get(item_id) ?? "", disbursement_id: id };
  });
  const next = page.has_more && page.last_index !== null ? String(page.last_index) : null;
  return { items, pagination: { limit, has_more: page.has_more, next_cursor: next } };
}

function registerListRoute(
  app: HttpServer,
  deps: DisbursementRouteDeps,
  { limited }: DisbursementHooks,
): void {
  app.get(
    "/disbursements",
    {
      onRequest: limited,
      schema: {
        summary: "The caller's disbursements, newest first",
        tags: ["disbursements"],
        security: securityFor("user"),
        querystring: listQuerySchema,
        response: {
          200: envelope(
            z.object({ disbursements: z.array(disbursementSchema), pagination: paginationSchema }),
          ).describe("A page; pass `pagination.next_cursor` as `cursor` for the next one"),
          ...errorResponses(400, 401, 429, {
            403: "The credential is not a user's token: batches are listed to their payer",
          }),
        },
      },
    },
    async (request) => {
      const principal = requirePrincipal(request);
      if (principal.kind !== "user") throw forbidden("only a user lists their disbursements");
      const { limit, cursor } = request.query;
      const after = cursor === undefined ? null : decodeCursor(cursor);
      // A cursor of another list (its id not a disbursement's) names no place in this one.
      if (after !== null && !transferIdSchema.safeParse(after.id).success) {
        throw new ApiError(400, "invalid_request", "querystring.cursor: is not a cursor this API returned");
      }
      const page = await deps.reads.page(principal.user_id, { limit, cursor }, request.log);
      return ok({
        disbursements: page.data.disbursements.map(disbursementView),
        pagination: page.data.pagination,
      });
    },
  );
}
