import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { transferIdSchema } from "../ids.ts";
import { isStepRefusal, LEDGER_BATCH_MAX, ledgerBatchRequestSchema, STEP_REFUSALS } from "../ledger.ts";

describe("the ledger contract", () => {
  it("spells a transfer id in lower case, whatever case it arrived in", () => {
    const id = "0190b5a8-0000-7000-8000-00000000000a";
    assert.equal(transferIdSchema.parse(id.toUpperCase()), id);
    const body = ledgerBatchRequestSchema.parse({
      operations: [{ op: "post", transfer_id: id.toUpperCase() }],
    });
    assert.equal(body.operations[0]?.transfer_id, id);
  });

  it("carries 1..LEDGER_BATCH_MAX operations", () => {
    const op = { op: "void", transfer_id: "0190b5a8-0000-7000-8000-00000000000a" };
    assert.equal(ledgerBatchRequestSchema.safeParse({ operations: [] }).success, false);
    const full = Array.from({ length: LEDGER_BATCH_MAX }, () => op);
    assert.equal(ledgerBatchRequestSchema.safeParse({ operations: full }).success, true);
    assert.equal(ledgerBatchRequestSchema.safeParse({ operations: [...full, op] }).success, false);
  });

  it("knows each step's refusals, and no other step's", () => {
    assert.equal(isStepRefusal("void", "hold_posted"), true);
    assert.equal(isStepRefusal("post", "hold_posted"), false);
    assert.equal(isStepRefusal("hold", "insufficient_funds"), true);
    for (const codes of Object.values(STEP_REFUSALS)) assert.ok(codes.length > 0);
  });
});
