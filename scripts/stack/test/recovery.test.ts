import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { rateRecovery } from "./recovery.ts";

const bounds = { baseline_ms: 10_000, window_ms: 2_000, recovery_max_ms: 15_000, share: 0.8 };

/** One event every 100 ms from 0 to 40 s, except within the given gap. */
function steadyWithGap(from_ms: number, to_ms: number): number[] {
  const times: number[] = [];
  for (let t = 0; t < 40_000; t += 100) if (t < from_ms || t >= to_ms) times.push(t);
  return times;
}

describe("rate recovery after a fault", () => {
  it("is the end of the first window holding 80% of the rate before", () => {
    // 10 events/s before; nothing for 3 s; the first 2 s window with 16 events ends 4.6 s after the fault.
    const r = rateRecovery(steadyWithGap(20_000, 23_000), 20_000, bounds);
    assert.equal(r.before_per_s, 10);
    assert.equal(r.ms, 4_600);
  });

  it("is one window when the rate never dropped", () => {
    assert.equal(rateRecovery(steadyWithGap(0, 0), 20_000, bounds).ms, 2_000);
  });

  it("is undefined when the rate is not back within the bound", () => {
    const r = rateRecovery(steadyWithGap(20_000, 34_000), 20_000, bounds);
    assert.equal(r.ms, undefined);
  });

  it("counts half the rate as not recovered", () => {
    const times = steadyWithGap(0, 0).filter((t) => t < 20_000 || t % 200 === 0);
    assert.equal(rateRecovery(times, 20_000, bounds).ms, undefined);
  });
});
