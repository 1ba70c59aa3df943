/**
 * One idempotent submission, whatever it creates (a transfer, a disbursement). The key's first
 * request creates the record, drives it as far as it goes while the client waits, and keeps the
 * answer it gave; a later request with the same key and body gets that answer again; the same
 * key with another body is refused. The answer is a `{status, body}` the route only sends:
 * this module knows nothing of HTTP requests or replies.
 */
import { ApiError } from "#packages/http/errors.ts";

/** What a submission keeps of its record to answer a replay. */
export interface SubmittedRecord {
  id: string;
  state: string;
  request_fingerprint: string;
  response_status: number | null;
  response_body: unknown;
}

export type Answer = { status: number; body: unknown };

/** An answer to send (replayed or first), or a refusal the route maps to its HTTP error. */
export type SubmissionOutcome =
  | { kind: "answered"; answer: Answer; replayed: boolean }
  | { kind: "key_reused"; id: string }
  | { kind: "in_progress" };

/**
 * A replay of a record still `created` this young is probably racing the first request, which
 * is still driving it: answering now would give a different answer than the first one will.
 */
export const IN_PROGRESS_WINDOW_MS = 10_000;

type Warn = { warn(fields: Record<string, unknown>, message: string): void };

export interface Submission<R extends SubmittedRecord> {
  fingerprint: string;
  createOrGet(): Promise<{ created: boolean; record: R; age_ms: number }>;
  /** Drives a new record; a failure leaves it to the sweep, so it is logged, not thrown. */
  drive(record: R): Promise<R>;
  answerFor(record: R): Answer;
  saveAnswer(id: string, answer: Answer): Promise<void>;
  log: Warn;
  /** The log field naming the record: `transfer_id`, `disbursement_id`. */
  id_field: string;
}

export async function submitIdempotently<R extends SubmittedRecord>(
  submission: Submission<R>,
): Promise<SubmissionOutcome> {
  const { created, record, age_ms } = await submission.createOrGet();
  if (!created) return replay(record, submission.fingerprint, age_ms, submission.answerFor);
  const current = await submission.drive(record);
  // Usually kept by the transition itself; else (no transition, or another driver's won the
  // race) kept now. Either way the answer is the one a replay will get.
  if (current.response_status !== null) return answered(stored(current), false);
  const answer = submission.answerFor(current);
  // The record exists whatever happens now: an error here must not become a 5xx that a
  // client without a key would answer by paying again.
  await submission.saveAnswer(current.id, answer).catch((error: unknown) => {
    submission.log.warn({ err: error, [submission.id_field]: current.id }, "could not keep the first answer");
  });
  return answered(answer, false);
}

/** The answer to a request whose key already names a record. */
export function replay<R extends SubmittedRecord>(
  record: R,
  fingerprint: string,
  age_ms: number,
  answerFor: (record: R) => Answer,
): SubmissionOutcome {
  if (record.request_fingerprint !== fingerprint) return { kind: "key_reused", id: record.id };
  if (record.response_status !== null) return answered(stored(record), true);
  if (record.state === "created" && age_ms < IN_PROGRESS_WINDOW_MS) return { kind: "in_progress" };
  return answered(answerFor(record), true);
}

const answered = (answer: Answer, replayed: boolean): SubmissionOutcome => ({
  kind: "answered",
  answer,
  replayed,
});

const stored = (record: SubmittedRecord): Answer => ({
  status: record.response_status ?? 500,
  body: record.response_body,
});

/**
 * The answer or the refusal in HTTP terms; `id_detail` names the record in a key-reuse refusal
 * (`transaction_id`, `disbursement_id`). Replays say so in `Idempotent-Replayed`, as Stripe does.
 */
export function httpAnswer(outcome: SubmissionOutcome, id_detail: string): Answer & { replayed: boolean } {
  switch (outcome.kind) {
    case "answered":
      return { ...outcome.answer, replayed: outcome.replayed };
    case "key_reused":
      throw new ApiError(
        422,
        "idempotency_key_reused",
        "this Idempotency-Key was already used with a different request body",
        { details: { [id_detail]: outcome.id } },
      );
    case "in_progress":
      throw new ApiError(
        409,
        "request_in_progress",
        "a request with this Idempotency-Key is still being processed",
        {
          // The request is a replay of the key, still unanswered: it says so like any replay.
          headers: { "retry-after": "1", "idempotent-replayed": "true" },
        },
      );
  }
}
