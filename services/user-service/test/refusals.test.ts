/**
 * The data tier names a refusal by its code only; the routes' one table turns it into the HTTP
 * status and code the API documents.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ApiError } from "#packages/http/errors.ts";
import { Refusal } from "../src/ledger/refusal.ts";
import { orRefused } from "../src/routes/refusals.ts";

describe("refusals", () => {
  it("are no HTTP errors where the data tier raises them", () => {
    const refusal = new Refusal("username_taken", "username alice is taken");
    assert.equal(refusal instanceof ApiError, false);
    assert.equal("status" in refusal, false);
  });

  it("become the documented status and code at the routes", async () => {
    const cases = [
      ["user_not_found", 404],
      ["username_taken", 409],
      ["balance_limit_exceeded", 422],
      ["hold_voided", 409],
      ["insufficient_funds", 422],
    ] as const;
    for (const [code, status] of cases) {
      await assert.rejects(orRefused(Promise.reject(new Refusal(code, `refused: ${code}`))), (error) => {
        assert.ok(error instanceof ApiError, code);
        assert.equal(error.status, status, code);
        assert.equal(error.code, code);
        assert.equal(error.message, `refused: ${code}`);
        return true;
      });
    }
  });

  it("leave every other error as it is, and an answer untouched", async () => {
    const crash = new Error("invariant: something broke");
    await assert.rejects(orRefused(Promise.reject(crash)), (error) => error === crash);
    assert.equal(await orRefused(Promise.resolve(7)), 7);
  });
});
