import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { recordTransferCommandSchema, recordTransfersCommandSchema } from "../messages.ts";
import { transferSnapshotSchema } from "../transfer.ts";

const snapshot = {
  id: "0190b5a8-0000-7000-8000-000000000001",
  amount: 500,
  source_user_id: 1,
  dest_user_id: 2,
  source_init_bal: 1_000,
  dest_init_bal: null,
  status: "PENDING",
  failure_reason: null,
  created_at: "2026-01-01T00:00:00.000Z",
  updated_at: "2026-01-01T00:00:00.000Z",
};
const place = { disbursement_id: "0190b5a8-0000-7000-8000-0000000000aa", item_index: 3, reference: "r3" };
const command = (s: object) => ({
  type: "RecordTransfer",
  message_id: "0190b5a8-0000-4000-8000-000000000009",
  snapshot: s,
});

describe("record commands", () => {
  it("parse a message written before items carried their place (redelivered across a deploy)", () => {
    const parsed = recordTransferCommandSchema.parse(command(snapshot));
    assert.deepEqual(parsed.snapshot, snapshot);
  });

  it("carry a batch item's place, one by one and in packs", () => {
    assert.deepEqual(recordTransferCommandSchema.parse(command({ ...snapshot, ...place })).snapshot, {
      ...snapshot,
      ...place,
    });
    const pack = recordTransfersCommandSchema.parse({
      type: "RecordTransfers",
      message_id: "0190b5a8-0000-4000-8000-000000000009",
      snapshots: [
        { ...snapshot, ...place },
        { ...snapshot, disbursement_id: null },
      ],
    });
    assert.deepEqual(pack.snapshots[0], { ...snapshot, ...place });
    assert.equal(pack.snapshots[1]?.disbursement_id, null);
  });

  it("refuse a place out of bounds", () => {
    for (const bad of [
      { item_index: -1 },
      { item_index: 1.5 },
      { item_index: 10_000 },
      { disbursement_id: "x" },
    ]) {
      assert.equal(
        recordTransferCommandSchema.safeParse(command({ ...snapshot, ...bad })).success,
        false,
        JSON.stringify(bad),
      );
    }
  });

  it("leave the public transfer's shape as it was", () => {
    assert.deepEqual(
      Object.keys(transferSnapshotSchema.parse({ ...snapshot, ...place })).sort(),
      Object.keys(snapshot).sort(),
    );
  });
});
