/**
 * Who sees which opening balance: the one redaction function, and the POST's answer built from
 * it. (Every read path is covered through the public API in test/integration/reads.test.ts.)
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { redactFor, type TransferSnapshot } from "#packages/contracts/transfer.ts";
import type { SagaTransfer } from "../src/saga/machine.ts";
import { responseFor } from "../src/saga/submission.ts";

const NOW = "2026-01-01T00:00:00.000Z";
const completed: SagaTransfer = {
  id: "0190b5a8-0000-7000-8000-000000000001",
  state: "completed",
  source_user_id: 1,
  dest_user_id: 2,
  amount: 500,
  source_init_bal: 1_000,
  dest_init_bal: 70,
  failure_reason: null,
  created_at: NOW,
  updated_at: NOW,
};
const snapshot: TransferSnapshot = { ...completed, status: "COMPLETED" } as TransferSnapshot;

describe("balance privacy", () => {
  it("shows source_init_bal to the payer, dest_init_bal to the payee, both to the operator", () => {
    const balances = (t: TransferSnapshot) => [t.source_init_bal, t.dest_init_bal];
    assert.deepEqual(balances(redactFor({ kind: "user", user_id: 1 }, snapshot)), [1_000, null]);
    assert.deepEqual(balances(redactFor({ kind: "user", user_id: 2 }, snapshot)), [null, 70]);
    assert.deepEqual(balances(redactFor({ kind: "user", user_id: 3 }, snapshot)), [null, null]);
    assert.deepEqual(balances(redactFor({ kind: "query" }, snapshot)), [null, null]);
    assert.deepEqual(balances(redactFor({ kind: "admin" }, snapshot)), [1_000, 70]);
  });

  it("answers a POST (or its replay, after the credit) with the payer's balance only", () => {
    const answer = responseFor(completed).body as { data: { transaction: TransferSnapshot } };
    assert.equal(answer.data.transaction.source_init_bal, 1_000);
    assert.equal(answer.data.transaction.dest_init_bal, null);
  });
});
