import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { backoff_ms } from "../index.ts";

describe("backoff_ms", () => {
  it("doubles its ceiling with each attempt up to the cap, half of it fixed", () => {
    const low = (attempt: number) => backoff_ms(attempt, 100, 1_000, { kind: "half", random: () => 0 });
    const high = (attempt: number) =>
      backoff_ms(attempt, 100, 1_000, { kind: "half", random: () => 0.999_999 });
    assert.deepEqual([0, 1, 2, 3, 4, 40].map(low), [50, 100, 200, 400, 500, 500]);
    assert.deepEqual([0, 1, 2, 3, 4, 40].map(high), [100, 200, 400, 800, 1_000, 1_000]);
  });

  it("with full jitter, spreads the delay over [0, ceiling)", () => {
    const at = (random: number) => backoff_ms(2, 100, 1_000, { kind: "full", random: () => random });
    assert.equal(at(0), 0);
    assert.equal(at(0.5), 200);
    assert.equal(at(0.999_999), 399);
  });

  it("without jitter, waits the ceiling itself", () => {
    assert.deepEqual(
      [0, 1, 2, 5].map((attempt) => backoff_ms(attempt, 200, 5_000, { kind: "none" })),
      [200, 400, 800, 5_000],
    );
  });

  it("stays within its bounds with the real random source", () => {
    for (let attempt = 0; attempt < 50; attempt++) {
      const half = backoff_ms(attempt, 100, 5_000);
      const ceiling = Math.min(5_000, 100 * 2 ** attempt);
      assert.ok(half >= ceiling / 2 && half <= ceiling, `${half} at attempt ${attempt}`);
      const full = backoff_ms(attempt, 100, 5_000, { kind: "full" });
      assert.ok(full >= 0 && full < ceiling, `${full} at attempt ${attempt}`);
    }
  });
});
