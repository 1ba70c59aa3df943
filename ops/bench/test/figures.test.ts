import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { reportFigures } from "../figures.ts";
import { aCase, results } from "./cases.ts";

describe("bench report figures", () => {
  it("compares the larger wallet set with the small set run just before it, and says its ratio to the sweep's peak too", () => {
    const run = {
      ...results(100, {}),
      scale_reference: aCase("1,000 wallets, again", 16, 80, {}),
      scale: [aCase("100,000 wallets", 16, 76, {})],
    };
    const figures = reportFigures(run);
    assert.equal(figures.peak.ours.throughput_tps, 100);
    assert.equal(figures.large_vs_small, 76 / 80, "against the run beside it");
    assert.equal(figures.large_vs_peak, 76 / 100, "against the sweep's best");
    assert.deepEqual(
      figures.cases.map((c) => c.name),
      ["1,000 wallets", "1,000 wallets, hot", "1,000 wallets, again", "100,000 wallets"],
    );
  });

  it("results written before the reference run compare with the sweep's peak", () => {
    const run = { ...results(100, {}), scale: [aCase("100,000 wallets", 16, 95, {})] };
    const figures = reportFigures(run);
    assert.equal(figures.large_vs_small, 0.95);
    assert.equal(figures.reference, figures.small);
    assert.equal(figures.cases.length, 3);
  });
});
