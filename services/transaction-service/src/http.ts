/**
 * The public API: transfers in (with idempotency keys), transfers out (through the cache and
 * the query service). Reads fall back to the saga's own row when the record is not written yet
 * or the query service cannot answer, so a client can always read back what it just created.
 */
import { createHash } from "node:crypto";
import { z } from "zod";
import { transferIdSchema, userIdParamSchema, userIdSchema, uuidv7 } from "#packages/contracts/ids.ts";
import { amountMinorSchema } from "#packages/contracts/money.ts";
import { listQuerySchema } from "#packages/contracts/pagination.ts";
import { type FailureReason, transferSnapshotSchema } from "#packages/contracts/transfer.ts";
import { ApiError, errorBody, notFound, ok } from "#packages/http/errors.ts";
import type { HttpServer } from "#packages/http/server.ts";
import type { Logger } from "#packages/log/index.ts";
import type { TransferCache } from "./cache.ts";
import type { QueryClient } from "./query-client.ts";
import { snapshotOf } from "./saga/machine.ts";
import type { SagaRunner } from "./saga/runner.ts";
import type { SagaStore, StoredTransfer } from "./saga/store.ts";

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

/** Refusals known while the request is still open map to a precise status, like a card decline. */
const refusalStatus: Partial<Record<FailureReason, number>> = {
  insufficient_funds: 422,
  source_not_found: 404,
  dest_not_found: 404,
};

const IN_PROGRESS_WINDOW_MS = 10_000;

export function fingerprint(body: z.infer<typeof transferBodySchema>): string {
  return createHash("sha256")
    .update(JSON.stringify([body.source_user_id, body.dest_user_id, body.amount]))
    .digest("hex");
}

/** The response a transfer request gets, given where the saga stands once the request is done with it. */
export function responseFor(transfer: StoredTransfer): { status: number; body: unknown } {
  const transaction = snapshotOf(transfer);
  const refused = transfer.failure_reason === null ? undefined : refusalStatus[transfer.failure_reason];
  if (transfer.source_init_bal === null && refused !== undefined && transfer.failure_reason !== null) {
    const message =
      transfer.failure_reason === "insufficient_funds"
        ? `user ${transfer.source_user_id} has insufficient funds for ${transfer.amount}`
        : transfer.failure_reason === "source_not_found"
          ? `user ${transfer.source_user_id} not found`
          : `user ${transfer.dest_user_id} not found`;
    return { status: refused, body: errorBody(transfer.failure_reason, message, { transaction }) };
  }
  return { status: 201, body: ok({ transaction }) };
}

export function registerRoutes(
  app: HttpServer,
  deps: {
    store: SagaStore;
    runner: SagaRunner;
    cache: TransferCache;
    query: QueryClient;
    logger: Logger;
    step_timeout_ms: number;
  },
): void {
  app.post(
    "/transactions/transfer",
    {
      schema: {
        body: transferBodySchema,
        headers: z.object({ "idempotency-key": idempotencyKeySchema.optional() }),
      },
    },
    async (request, reply) => {
      const body = request.body;
      if (body.source_user_id === body.dest_user_id) {
        throw new ApiError(422, "same_wallet", "source_user_id and dest_user_id must differ");
      }
      const key = request.headers["idempotency-key"] ?? null;
      const print = fingerprint(body);
      const { created, transfer } = await deps.store.createOrGet({
        id: uuidv7(),
        idempotency_key: key,
        request_fingerprint: print,
        source_user_id: body.source_user_id,
        dest_user_id: body.dest_user_id,
        amount: body.amount,
        now: new Date().toISOString(),
        step_timeout_ms: deps.step_timeout_ms,
      });

      if (!created) {
        if (transfer.request_fingerprint !== print) {
          throw new ApiError(
            422,
            "idempotency_key_reused",
            "this Idempotency-Key was already used with a different request body",
            { details: { transaction_id: transfer.id } },
          );
        }
        reply.header("idempotent-replayed", "true");
        if (transfer.response_status !== null)
          return reply.status(transfer.response_status).send(transfer.response_body);
        if (
          transfer.state === "created" &&
          Date.now() - Date.parse(transfer.created_at) < IN_PROGRESS_WINDOW_MS
        ) {
          throw new ApiError(
            409,
            "request_in_progress",
            "a request with this Idempotency-Key is still being processed",
            {
              headers: { "retry-after": "1" },
            },
          );
        }
        const replay = responseFor(transfer);
        return reply.status(replay.status).send(replay.body);
      }

      let current = transfer;
      try {
        current = await deps.runner.advance(transfer);
      } catch (error) {
        // Accepted but not yet debited (the ledger did not answer): the sweep finishes it.
        request.log.warn(
          { err: error, transfer_id: transfer.id },
          "debit not confirmed in time; left to the sweep",
        );
      }
      const response = responseFor(current);
      await deps.store.saveResponse(current.id, response.status, response.body);
      return reply.status(response.status).send(response.body);
    },
  );

  app.get(
    "/transactions/:id",
    { schema: { params: z.strictObject({ id: transferIdSchema }) } },
    async (request) => {
      const id = request.params.id;
      const cached = await deps.cache.getTransfer(id);
      if (cached !== null) return ok({ transaction: cached });
      try {
        const answer = await deps.query.getTransfer(id);
        if (answer.status === 200) {
          const transaction = transferSnapshotSchema.parse(
            (answer.body as { data: { transaction: unknown } }).data.transaction,
          );
          await deps.cache.putTransfer(transaction);
          return ok({ transaction });
        }
        if (answer.status !== 404)
          request.log.warn({ status: answer.status }, "query service error; reading the saga row");
      } catch (error) {
        request.log.warn({ err: error }, "query service unreachable; reading the saga row");
      }
      const transfer = await deps.store.get(id);
      if (transfer === null) throw notFound(`transaction ${id}`);
      return ok({ transaction: snapshotOf(transfer) });
    },
  );

  app.get(
    "/transactions/user/:user_id",
    { schema: { params: z.strictObject({ user_id: userIdParamSchema }), querystring: listQuerySchema } },
    async (request, reply) => {
      const user_id = request.params.user_id;
      const page_key = `${request.query.limit}:${request.query.cursor ?? ""}`;
      const cached = await deps.cache.getList(user_id, page_key);
      if (cached !== null) return cached;
      const unavailable = new ApiError(
        503,
        "query_unavailable",
        "transaction history is temporarily unavailable",
        {
          headers: { "retry-after": "1" },
        },
      );
      const answer = await deps.query.listUserTransfers(user_id, request.query).catch((error: unknown) => {
        request.log.warn({ err: error }, "query service unreachable on list");
        throw unavailable;
      });
      if (answer.status !== 200) {
        request.log.warn({ status: answer.status }, "query service error on list");
        throw unavailable;
      }
      await deps.cache.putList(user_id, page_key, answer.body);
      return reply.send(answer.body);
    },
  );
}
