/**
 * The transfer submission, free of HTTP: scope the caller's Idempotency-Key to them, create the
 * transfer (or find the one the key names), drive it while the client waits, and answer with the
 * `{status, body}` a replay of the key will get too.
 */
import { createHash } from "node:crypto";
import { uuidv7 } from "#packages/contracts/ids.ts";
import { type FailureReason, redactFor } from "#packages/contracts/transfer.ts";
import { errorBody, ok } from "#packages/http/errors.ts";
import { type Answer, type SubmissionOutcome, submitIdempotently } from "../idempotent-submission.ts";
import { type SagaTransfer, snapshotOf } from "./machine.ts";
import type { SagaRunner } from "./runner.ts";
import { type SagaStore, type StoredTransfer, TransferOutcomeUnknownError } from "./store.ts";

export type TransferRequest = { source_user_id: number; dest_user_id: number; amount: number };

/**
 * A submission's outcome, or `outcome_unknown`: PostgreSQL failed around the commit of a keyless
 * transfer and reading it back did not tell whether it exists.
 */
export type TransferSubmission = SubmissionOutcome | { kind: "outcome_unknown"; transfer_id: string };

export type SubmitDeps = {
  store: Pick<SagaStore, "createOrGet" | "saveResponse">;
  runner: Pick<SagaRunner, "advance" | "onTransition">;
  step_timeout_ms: number;
};

/** Refusals known while the request is still open map to a precise status, like a card decline. */
const refusalStatus: Partial<Record<FailureReason, number>> = {
  insufficient_funds: 422,
  source_not_found: 404,
  dest_not_found: 404,
};

export function fingerprint(body: TransferRequest): string {
  return createHash("sha256")
    .update(JSON.stringify([body.source_user_id, body.dest_user_id, body.amount]))
    .digest("hex");
}

/**
 * Keys are scoped to the user (as Stripe scopes them to an account): another user's key can
 * neither collide with nor reveal this one.
 */
export function scopedKey(user_id: number, given: string | undefined): string | null {
  return given === undefined ? null : `user:${user_id}:${given}`;
}

/** The response a transfer request gets, given where the saga stands once the request is done with it. */
export function responseFor(transfer: SagaTransfer): Answer {
  // The answer goes to the payer: the payee's balance is not theirs to see.
  const transaction = redactFor({ kind: "user", user_id: transfer.source_user_id }, snapshotOf(transfer));
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

/** Submits a transfer the caller (`user_id`, already checked to own the source) asked for. */
export async function submitTransfer(
  deps: SubmitDeps,
  request: { user_id: number; idempotency_key: string | undefined; body: TransferRequest },
  log: { warn(fields: Record<string, unknown>, message: string): void },
): Promise<TransferSubmission> {
  const { body } = request;
  const print = fingerprint(body);
  try {
    return await submitIdempotently<StoredTransfer>({
      fingerprint: print,
      createOrGet: async () => {
        const { created, transfer, age_ms } = await deps.store.createOrGet({
          id: uuidv7(),
          idempotency_key: scopedKey(request.user_id, request.idempotency_key),
          request_fingerprint: print,
          source_user_id: body.source_user_id,
          dest_user_id: body.dest_user_id,
          amount: body.amount,
          step_timeout_ms: deps.step_timeout_ms,
        });
        return { created, record: transfer, age_ms };
      },
      drive: async (transfer) => {
        deps.runner.onTransition(transfer);
        return deps.runner.advance(transfer, responseFor).catch((error: unknown) => {
          // Accepted, its ledger step not confirmed (the ledger did not answer): the sweep finishes it.
          log.warn(
            { err: error, transfer_id: transfer.id },
            "ledger step not confirmed in time; left to the sweep",
          );
          return transfer;
        });
      },
      answerFor: responseFor,
      saveAnswer: (id, answer) => deps.store.saveResponse(id, answer.status, answer.body),
      log,
      id_field: "transfer_id",
    });
  } catch (error) {
    if (error instanceof TransferOutcomeUnknownError)
      return { kind: "outcome_unknown", transfer_id: error.transfer_id };
    throw error;
  }
}
