/**
 * The idempotent-submission rules, with no engine: the first request drives its record and keeps
 * its answer (even when keeping fails, the answer still goes out); a replay gets the kept answer;
 * the same key with another body is refused; a young record still `created` is in progress.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  type Answer,
  httpAnswer,
  IN_PROGRESS_WINDOW_MS,
  replay,
  type Submission,
  type SubmittedRecord,
  submitIdempotently,
} from "../src/idempotent-submission.ts";

const silent = { warn: () => {} };
const answerFor = (r: SubmittedRecord): Answer => ({ status: 201, body: { state: r.state } });

function record(over: Partial<SubmittedRecord> = {}): SubmittedRecord {
  return {
    id: "r1",
    state: "created",
    request_fingerprint: "fp",
    response_status: null,
    response_body: null,
    ...over,
  };
}

function submission(over: Partial<Submission<SubmittedRecord>> = {}): Submission<SubmittedRecord> & {
  saved: Answer[];
} {
  const saved: Answer[] = [];
  return {
    fingerprint: "fp",
    createOrGet: async () => ({ created: true, record: record(), age_ms: 0 }),
    drive: async (r) => ({ ...r, state: "debited" }),
    answerFor,
    saveAnswer: async (_id, answer) => {
      saved.push(answer);
    },
    log: silent,
    id_field: "record_id",
    saved,
    ...over,
  };
}

describe("idempotent submission", () => {
  it("drives a new record and keeps the answer it sends", async () => {
    const s = submission();
    const outcome = await submitIdempotently(s);
    assert.deepEqual(outcome, {
      kind: "answered",
      answer: { status: 201, body: { state: "debited" } },
      replayed: false,
    });
    assert.deepEqual(s.saved, [{ status: 201, body: { state: "debited" } }]);
  });

  it("sends the answer the transition kept rather than a new one", async () => {
    const s = submission({
      drive: async (r) => ({ ...r, state: "failed", response_status: 422, response_body: "kept" }),
    });
    const outcome = await submitIdempotently(s);
    assert.deepEqual(outcome, { kind: "answered", answer: { status: 422, body: "kept" }, replayed: false });
    assert.deepEqual(s.saved, []);
  });

  it("still answers when keeping the answer fails: the record exists, a 5xx would invite a second payment", async () => {
    const warned: string[] = [];
    const s = submission({
      saveAnswer: async () => {
        throw new Error("Connection terminated unexpectedly");
      },
      log: { warn: (_fields, message) => warned.push(message) },
    });
    const outcome = await submitIdempotently(s);
    assert.equal(outcome.kind, "answered");
    assert.deepEqual(warned, ["could not keep the first answer"]);
  });

  it("replays without driving again", async () => {
    let driven = 0;
    const kept = record({ state: "completed", response_status: 201, response_body: "first" });
    const s = submission({
      createOrGet: async () => ({ created: false, record: kept, age_ms: 50_000 }),
      drive: async (r) => {
        driven += 1;
        return r;
      },
    });
    assert.deepEqual(await submitIdempotently(s), {
      kind: "answered",
      answer: { status: 201, body: "first" },
      replayed: true,
    });
    assert.equal(driven, 0);
    assert.deepEqual(s.saved, []);
  });

  it("refuses the key with another body, even when an answer is kept", () => {
    const kept = record({ request_fingerprint: "other", response_status: 201, response_body: "first" });
    assert.deepEqual(replay(kept, "fp", 0, answerFor), { kind: "key_reused", id: "r1" });
  });

  it("is in progress while a created record is young, then answers from where it stands", () => {
    assert.deepEqual(replay(record(), "fp", IN_PROGRESS_WINDOW_MS - 1, answerFor), { kind: "in_progress" });
    assert.deepEqual(replay(record(), "fp", IN_PROGRESS_WINDOW_MS, answerFor), {
      kind: "answered",
      answer: { status: 201, body: { state: "created" } },
      replayed: true,
    });
    // Past `created`, the record's state is the answer at once.
    assert.equal(replay(record({ state: "debited" }), "fp", 0, answerFor).kind, "answered");
  });

  it("maps refusals to the API's errors: 422 naming the record, 409 with Retry-After", () => {
    assert.throws(
      () => httpAnswer({ kind: "key_reused", id: "r1" }, "transaction_id"),
      (error: { status: number; code: string; details: unknown }) =>
        error.status === 422 &&
        error.code === "idempotency_key_reused" &&
        JSON.stringify(error.details) === JSON.stringify({ transaction_id: "r1" }),
    );
    assert.throws(
      () => httpAnswer({ kind: "in_progress" }, "transaction_id"),
      (error: { status: number; code: string; headers: Record<string, string> }) =>
        error.status === 409 && error.code === "request_in_progress" && error.headers["retry-after"] === "1",
    );
  });
});
