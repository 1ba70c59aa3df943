import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { InvariantError, assert as invariant } from "../assert.ts";

describe("assert", () => {
  it("passes a condition that holds and narrows its type", () => {
    const value: number | undefined = [1][0];
    invariant(value !== undefined, "the list has an element");
    assert.equal(value + 1, 2);
  });

  it("throws an InvariantError naming the broken condition", () => {
    assert.throws(
      () => invariant(false, "balance must not be negative"),
      (error: unknown) =>
        error instanceof InvariantError &&
        error instanceof Error &&
        error.message === "invariant: balance must not be negative",
    );
  });
});
