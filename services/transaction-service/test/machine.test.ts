import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  awaitedRecordStatus,
  isFinal,
  isParkable,
  nextAction,
  publicStatus,
  recordOf,
  type SagaInput,
  type SagaState,
  type SagaTransfer,
  sagaStates,
  transition,
} from "../src/saga/machine.ts";

const NOW = "2026-01-01T00:00:00.000Z";
function must<T>(value: T | null | undefined): T {
  assert.ok(value !== null && value !== undefined);
  return value;
}
const base = (state: SagaState): SagaTransfer => ({
  id: "0190b5a8-0000-7000-8000-000000000001",
  state,
  source_user_id: 1,
  dest_user_id: 2,
  amount: 500,
  source_init_bal: state === "created" ? null : 1_000,
  dest_init_bal: null,
  failure_reason: null,
  created_at: NOW,
  updated_at: NOW,
});

describe("saga state machine", () => {
  it("sends a batch item's place with each of its records, and none for a lone transfer", () => {
    const place = { disbursement_id: "0190b5a8-0000-7000-8000-0000000000aa", item_index: 7, reference: "r7" };
    const debited = { ...base("recorded"), place };
    const posted = must(transition(debited, { kind: "post_ok", dest_init_bal: 0 }, NOW));
    assert.deepEqual(
      {
        disbursement_id: posted.record?.disbursement_id,
        item_index: posted.record?.item_index,
        reference: posted.record?.reference,
      },
      place,
    );
    assert.equal(recordOf(debited).item_index, 7, "and with a late credit's PENDING record");
    assert.equal("disbursement_id" in recordOf(base("recorded")), false);
  });

  it("walks the happy path: one ledger step, whose COMPLETED record is the first and is awaited", () => {
    assert.equal(nextAction("created"), "transfer");
    const posted = transition(
      base("created"),
      { kind: "transfer_ok", source_init_bal: 1_000, dest_init_bal: 70 },
      NOW,
    );
    assert.equal(posted?.next.state, "posted");
    assert.equal(posted?.record?.status, "COMPLETED");
    assert.equal(posted?.record?.source_init_bal, 1_000);
    assert.equal(posted?.record?.dest_init_bal, 70);
    assert.equal(nextAction("posted"), "await_record", "the final record is awaited");

    const completed = transition(must(posted).next, { kind: "record_written", status: "COMPLETED" }, NOW);
    assert.equal(completed?.next.state, "completed");
    assert.ok(isFinal("completed"));
  });

  it("credits a funded item (recorded) with no record before its credit's", () => {
    assert.equal(nextAction("recorded"), "post", "no wait for a record");
    const posted = transition(base("recorded"), { kind: "post_ok", dest_init_bal: 70 }, NOW);
    assert.equal(posted?.next.state, "posted");
    assert.equal(posted?.record?.status, "COMPLETED");
    assert.equal(posted?.next.source_init_bal, 1_000);
  });

  it("drives a row an earlier version left waiting in held on to its credit", () => {
    assert.equal(nextAction("held"), "post");
    assert.equal(awaitedRecordStatus("held"), null);
    assert.equal(transition(base("held"), { kind: "post_ok", dest_init_bal: 3 }, NOW)?.next.state, "posted");
    assert.equal(isParkable("held"), true);
  });

  it("ends a refused transfer FAILED with no refund step (no money moved)", () => {
    const failing = transition(
      base("created"),
      { kind: "transfer_rejected", reason: "insufficient_funds" },
      NOW,
    );
    assert.equal(failing?.next.state, "failing");
    assert.equal(failing?.next.failure_reason, "insufficient_funds");
    assert.equal(failing?.record?.status, "FAILED");
    assert.equal(nextAction("failing"), "await_record");
  });

  it("refunds when the credit is refused; a PENDING record's answer, even a refusal, changes nothing", () => {
    for (const input of [
      { kind: "record_rejected", status: "PENDING" },
      { kind: "record_written", status: "PENDING" },
    ] as SagaInput[]) {
      for (const state of ["recorded", "posted", "completed"] as const) {
        assert.equal(transition(base(state), input, NOW), null, `${input.kind} in ${state}`);
      }
    }
    const refused = transition(base("recorded"), { kind: "post_rejected", reason: "dest_unavailable" }, NOW);
    assert.equal(refused?.next.state, "refunding");
    assert.equal(refused?.next.failure_reason, "dest_unavailable");
    assert.equal(nextAction("refunding"), "void");
    const voided = transition(must(refused).next, { kind: "void_ok" }, NOW);
    assert.equal(voided?.next.state, "failing");
    assert.equal(voided?.record?.status, "FAILED");
  });

  it("ignores inputs that do not apply (duplicates, late answers) in every state", () => {
    const inputs: SagaInput[] = [
      { kind: "transfer_ok", source_init_bal: 1, dest_init_bal: 1 },
      { kind: "transfer_rejected", reason: "insufficient_funds" },
      { kind: "record_written", status: "PENDING" },
      { kind: "record_written", status: "COMPLETED" },
      { kind: "record_written", status: "FAILED" },
      { kind: "record_rejected", status: "PENDING" },
      { kind: "record_rejected", status: "COMPLETED" },
      { kind: "record_rejected", status: "FAILED" },
      { kind: "post_ok", dest_init_bal: 1 },
      { kind: "post_rejected", reason: "dest_unavailable" },
      { kind: "void_ok" },
    ];
    // Each state's inputs that apply, and where they lead; every other input is ignored.
    const expected: Record<SagaState, Record<string, SagaState>> = {
      funding: {},
      created: { transfer_ok: "posted", transfer_rejected: "failing" },
      held: { post_ok: "posted", post_rejected: "refunding" },
      recorded: { post_ok: "posted", post_rejected: "refunding" },
      posted: { "record_written:COMPLETED": "completed", "record_rejected:COMPLETED": "completed" },
      completed: {},
      refunding: { void_ok: "failing", post_ok: "posted" },
      failing: { "record_written:FAILED": "failed", "record_rejected:FAILED": "failed" },
      failed: {},
      voiding: { void_ok: "failing" },
      // Parked waits for an operator: no input moves it.
      parked: {},
    };
    const label = (input: SagaInput) => ("status" in input ? `${input.kind}:${input.status}` : input.kind);
    for (const state of sagaStates) {
      const applied: Record<string, SagaState> = {};
      for (const input of inputs) {
        const step = transition(base(state), input, NOW);
        if (step !== null) applied[label(input)] = step.next.state;
      }
      assert.deepEqual(applied, expected[state], `inputs that apply in ${state}`);
      if (isFinal(state)) assert.equal(Object.keys(applied).length, 0, `${state} must ignore everything`);
    }
    // Once posted, nothing can send the transfer to the refund branch.
    for (const input of inputs) {
      const next = transition(base("posted"), input, NOW);
      assert.ok(next === null || next.next.state === "completed");
    }
    // Once refunding, only the ledger's word that B was already credited leads to posted.
    for (const input of inputs) {
      const next = transition(base("refunding"), input, NOW);
      assert.ok(next === null || next.next.state === (input.kind === "post_ok" ? "posted" : "failing"));
    }
  });

  it("completes a refund that finds the hold already posted: the money reached B", () => {
    const refunding = { ...base("refunding"), failure_reason: "dest_unavailable" as const };
    const posted = transition(refunding, { kind: "post_ok", dest_init_bal: 7 }, NOW);
    assert.equal(posted?.next.state, "posted");
    assert.equal(posted?.next.failure_reason, null);
    assert.equal(posted?.next.dest_init_bal, 7);
    assert.equal(posted?.record?.status, "COMPLETED");
  });

  it("refunds a row an earlier version left voiding, and keeps it FAILED", () => {
    const voiding = { ...base("voiding"), failure_reason: "insufficient_funds" as const };
    assert.equal(nextAction("voiding"), "void");
    assert.equal(publicStatus("voiding"), "FAILED");
    const failing = transition(voiding, { kind: "void_ok" }, NOW);
    assert.equal(failing?.next.state, "failing");
    assert.equal(failing?.record?.status, "FAILED");
    assert.equal(failing?.next.failure_reason, "insufficient_funds");
  });

  it("ignores a transfer's success arriving for a FAILED transfer (the runner reports it)", () => {
    for (const state of ["failing", "failed"] as const) {
      const input = { kind: "transfer_ok", source_init_bal: 900, dest_init_bal: 0 } as const;
      assert.equal(transition(base(state), input, NOW), null);
    }
  });

  it("reports PENDING until the money is decided", () => {
    assert.equal(publicStatus("created"), "PENDING");
    assert.equal(publicStatus("held"), "PENDING");
    assert.equal(publicStatus("recorded"), "PENDING");
    assert.equal(publicStatus("refunding"), "PENDING");
    assert.equal(publicStatus("posted"), "COMPLETED");
    assert.equal(publicStatus("failing"), "FAILED");
  });
});
