import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { RecordTransferCommand } from "#packages/contracts/messages.ts";
import type { TransferStatus } from "#packages/contracts/transfer.ts";
import { planWrites, type StoredRecord } from "../src/plan.ts";

const command = (id: string, status: TransferStatus): RecordTransferCommand => ({
  type: "RecordTransfer",
  message_id: "0190b5a8-0000-7000-8000-00000000000a",
  snapshot: {
    id,
    amount: 10,
    source_user_id: 1,
    dest_user_id: 2,
    source_init_bal: 100,
    dest_init_bal: status === "COMPLETED" ? 5 : null,
    status,
    failure_reason: status === "FAILED" ? "record_timeout" : null,
    created_at: "2026-01-01T00:00:00.000Z",
    updated_at: "2026-01-01T00:00:00.000Z",
  },
});
const A = "0190b5a8-0000-7000-8000-000000000001";
const B = "0190b5a8-0000-7000-8000-000000000002";

describe("record writer plan", () => {
  it("inserts new records and upgrades existing ones, one write per record", () => {
    const stored = new Map<string, StoredRecord>([[B, { rank: 1, status: "PENDING" }]]);
    const plan = planWrites(stored, [
      command(A, "PENDING"),
      command(A, "COMPLETED"),
      command(B, "COMPLETED"),
    ]);
    assert.deepEqual(
      plan.writes.map((w) => [w.mode, w.snapshot.id, w.snapshot.status]),
      [
        ["insert", A, "COMPLETED"],
        ["update", B, "COMPLETED"],
      ],
    );
    assert.ok(plan.outcomes.every((o) => o.kind === "recorded"));
  });

  it("never moves a record backwards, and still acknowledges the stale command", () => {
    const stored = new Map<string, StoredRecord>([[A, { rank: 2, status: "COMPLETED" }]]);
    const plan = planWrites(stored, [command(A, "PENDING"), command(A, "COMPLETED")]);
    assert.equal(plan.writes.length, 0);
    assert.deepEqual(
      plan.outcomes.map((o) => o.kind),
      ["recorded", "recorded"],
    );
  });

  it("refuses to turn a COMPLETED record FAILED (or back)", () => {
    const stored = new Map<string, StoredRecord>([[A, { rank: 2, status: "COMPLETED" }]]);
    const plan = planWrites(stored, [command(A, "FAILED")]);
    assert.equal(plan.writes.length, 0);
    assert.equal(plan.outcomes[0]?.kind, "conflict");
  });
});
