import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { RecordTransferCommand } from "#packages/contracts/messages.ts";
import type { TransferStatus } from "#packages/contracts/transfer.ts";
import { planWrites } from "../src/plan.ts";

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
  it("keeps the most advanced snapshot per record, one write each", () => {
    const plan = planWrites([
      command(A, "PENDING"),
      command(A, "COMPLETED"),
      command(B, "PENDING"),
      command(A, "PENDING"),
    ]);
    assert.deepEqual(
      plan.writes.map((w) => [w.id, w.status]),
      [
        [A, "COMPLETED"],
        [B, "PENDING"],
      ],
    );
    assert.ok(plan.outcomes.every((o) => o.kind === "recorded"));
  });

  it("refuses two different final statuses for one record in a batch", () => {
    const plan = planWrites([command(A, "COMPLETED"), command(A, "FAILED")]);
    assert.deepEqual(
      plan.writes.map((w) => w.status),
      ["COMPLETED"],
    );
    assert.deepEqual(
      plan.outcomes.map((o) => o.kind),
      ["recorded", "conflict"],
    );
  });
});
