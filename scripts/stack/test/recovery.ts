// How the cluster suites judge a fault: from the times of events (transfers accepted or
// completed, writes acknowledged), when their rate was back to a share of its level before.

export interface RecoveryBounds {
  /** The rate before the fault is taken over this long. */
  baseline_ms: number;
  /** The recovered rate is judged over sliding windows this long. */
  window_ms: number;
  /** A window must end within this long after the fault. */
  recovery_max_ms: number;
  /** Of the rate before, e.g. 0.8. */
  share: number;
}

export interface Recovery {
  /** Events per second over the baseline before the fault. */
  before_per_s: number;
  /** From the fault to the end of the first window at the share of the rate before; undefined if none in time. */
  ms: number | undefined;
}

/** Sliding windows step this far apart. */
const step_ms = 100;

export function rateRecovery(times: readonly number[], at: number, bounds: RecoveryBounds): Recovery {
  const between = (from: number, to: number) => times.filter((t) => t >= from && t < to).length;
  const before_per_s = (between(at - bounds.baseline_ms, at) * 1_000) / bounds.baseline_ms;
  const wanted = (bounds.share * before_per_s * bounds.window_ms) / 1_000;
  for (let t = at; t + bounds.window_ms <= at + bounds.recovery_max_ms; t += step_ms) {
    if (between(t, t + bounds.window_ms) >= wanted) return { before_per_s, ms: t + bounds.window_ms - at };
  }
  return { before_per_s, ms: undefined };
}
