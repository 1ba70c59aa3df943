import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type SagaState, type SagaTransfer, sagaStates } from "../src/saga/machine.ts";
import { disbursementEventOf, transferEventOf } from "../src/saga/webhook-events.ts";

const transfer = (state: SagaState): SagaTransfer => ({
  id: "0190a8f0-0000-7000-8000-000000000001",
  state,
  source_user_id: 1,
  dest_user_id: 2,
  amount: 500,
  source_init_bal: 1_000,
  dest_init_bal: 30,
  failure_reason: state === "failed" || state === "failing" ? "record_rejected" : null,
  created_at: "2026-12-01T12:00:00.000Z",
  updated_at: "2026-12-01T12:00:01.000Z",
});

describe("webhook events of saga transitions", () => {
  it("raise transfer.completed or transfer.failed once, when the public status turns final", () => {
    const raised: string[] = [];
    for (const expected of sagaStates) {
      for (const next of sagaStates) {
        const event = transferEventOf(expected, transfer(next));
        if (event !== null) raised.push(`${expected}->${next}:${event.type}`);
      }
    }
    // From each pending state into each final one, and never between final states.
    const pending = ["funding", "created", "held", "recorded", "refunding", "parked"];
    const final = {
      posted: "completed",
      completed: "completed",
      failing: "failed",
      failed: "failed",
      voiding: "failed",
    };
    const expected = pending.flatMap((p) =>
      Object.entries(final).map(([n, kind]) => `${p}->${n}:transfer.${kind}`),
    );
    assert.deepEqual(raised.sort(), expected.sort());
  });

  it("go to payer and payee under a stable id, without either balance", () => {
    const event = transferEventOf("held", transfer("posted"));
    assert.ok(event !== null);
    assert.equal(event.id, "0190a8f0-0000-7000-8000-000000000001.completed");
    assert.deepEqual(event.user_ids, [1, 2]);
    const data = event.data as { transaction: Record<string, unknown> };
    assert.equal(data.transaction.status, "COMPLETED");
    assert.equal(data.transaction.source_init_bal, null);
    assert.equal(data.transaction.dest_init_bal, null);
    assert.equal(data.transaction.amount, 500);
  });

  it("raise disbursement.completed to the payer once the batch is final", () => {
    const batch = {
      id: "0190a8f0-0000-7000-8000-0000000000aa",
      source_user_id: 9,
      status: "PARTIALLY_COMPLETED",
    };
    const event = disbursementEventOf(batch);
    assert.equal(event?.type, "disbursement.completed");
    assert.equal(event?.id, `${batch.id}.completed`);
    assert.deepEqual(event?.user_ids, [9]);
    assert.equal(disbursementEventOf({ ...batch, status: "PENDING" }), null);
  });
});
