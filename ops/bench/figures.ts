/**
 * The figures a bench report and its RESULT line are made of, from the cases a run measured:
 * the peak, the ratios to pgbench and to the uniform run, kept apart from main.ts so they can be
 * tested without running a bench.
 */
import type { Results } from "./main.ts";

/** The cases and ratios the report and the RESULT line are made of. */
export function reportFigures(results: Results) {
  const peak = results.sweep.reduce((best, c) =>
    c.ours.throughput_tps > best.ours.throughput_tps ? c : best,
  );
  const baseline_peak = results.sweep.reduce((best, c) =>
    c.baseline.throughput_tps > best.baseline.throughput_tps ? c : best,
  );
  const small = results.sweep.find((c) => c.concurrency === peak.concurrency) ?? peak;
  const large = results.scale[0];
  const reference = results.scale_reference ?? small;
  const cases = [
    small,
    results.hot,
    ...(results.scale_reference === undefined ? [] : [reference]),
    ...results.scale,
  ];
  const ratio = peak.ours.throughput_tps / baseline_peak.baseline.throughput_tps;
  const hot_vs_uniform = results.hot.ours.throughput_tps / small.ours.throughput_tps;
  const large_vs_small =
    large === undefined ? null : large.ours.throughput_tps / reference.ours.throughput_tps;
  const large_vs_peak = large === undefined ? null : large.ours.throughput_tps / small.ours.throughput_tps;
  const half = results.half_rate.result;
  return {
    peak,
    baseline_peak,
    small,
    large,
    reference,
    cases,
    ratio,
    hot_vs_uniform,
    large_vs_small,
    large_vs_peak,
    half,
  };
}

export type ReportFigures = ReturnType<typeof reportFigures>;
