import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { TransferSnapshot } from "#packages/contracts/transfer.ts";
import { fromDocument, recordFromDocument, toDocument } from "../index.ts";

const lone: TransferSnapshot = {
  id: "0190b5a8-0000-7000-8000-000000000001",
  amount: 500,
  source_user_id: 1,
  dest_user_id: 2,
  source_init_bal: 1_000,
  dest_init_bal: 40,
  status: "COMPLETED",
  failure_reason: null,
  created_at: "2026-01-01T00:00:00.000Z",
  updated_at: "2026-01-01T00:00:01.000Z",
};
const place = { disbursement_id: "0190b5a8-0000-7000-8000-0000000000aa", item_index: 0, reference: "r0" };

describe("transfer documents", () => {
  it("hold a batch item's place, and give it back to the items read only", () => {
    const doc = toDocument({ ...lone, ...place });
    assert.equal(doc.disbursement_id, place.disbursement_id);
    assert.equal(doc.item_index, 0);
    assert.equal(doc.reference, "r0");
    assert.deepEqual(recordFromDocument(doc), { ...lone, ...place });
    assert.deepEqual(fromDocument(doc), lone);
  });

  it("list a batch item that never left the payer under the payer alone, any other under both", () => {
    const refused = {
      ...lone,
      ...place,
      status: "FAILED" as const,
      source_init_bal: null,
      dest_init_bal: null,
    };
    assert.deepEqual(toDocument({ ...refused, failure_reason: "dest_not_found" }).party_user_ids, [1]);
    assert.deepEqual(toDocument({ ...refused, failure_reason: "insufficient_funds" }).party_user_ids, [1]);
    // Held, then refunded: the payee existed and was tried.
    const refunded = { ...refused, source_init_bal: 1_000, failure_reason: "dest_unavailable" as const };
    assert.deepEqual(toDocument(refunded).party_user_ids, [1, 2]);
    assert.deepEqual(toDocument({ ...lone, ...place }).party_user_ids, [1, 2]);
    // A single transfer's payee was checked when it was made.
    assert.deepEqual(toDocument({ ...lone, status: "FAILED", source_init_bal: null }).party_user_ids, [1, 2]);
  });

  it("keep a lone transfer's document as it always was", () => {
    for (const snapshot of [lone, { ...lone, disbursement_id: null }]) {
      const doc = toDocument(snapshot);
      assert.equal("disbursement_id" in doc || "item_index" in doc || "reference" in doc, false);
      assert.deepEqual(recordFromDocument(doc), lone);
    }
  });
});
