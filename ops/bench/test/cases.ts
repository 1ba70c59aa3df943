/** Bench results made by hand, for the tests of what reads them (the report's figures, --cluster). */
import type { Case, Results } from "../main.ts";

export const latency = (p_ms: number) => ({
  count: 10,
  p50_ms: p_ms,
  p95_ms: p_ms,
  p99_ms: p_ms,
  max_ms: p_ms,
});

/** A case measured over 2 s, with the CPU seconds each process used in that window. */
export function aCase(name: string, concurrency: number, tps: number, cpu_s: Record<string, number>): Case {
  return {
    name,
    wallets: 1_000,
    hot_share: 0,
    concurrency,
    ours: {
      duration_s: 2,
      sent: tps * 2,
      completed: tps * 2,
      failed: 0,
      unfinished: 0,
      errors: 0,
      throughput_tps: tps,
      post: latency(5),
      completion: latency(40),
      poll_get: latency(1),
      gets_per_transfer: 1,
    },
    baseline: { throughput_tps: 1_000, latency: latency(2) } as Case["baseline"],
    cpu_ours_s: cpu_s,
    cpu_baseline_s: {},
    cpu_window_ours_s: 2,
    cpu_window_baseline_s: 2,
    window_ms: [0, 2_000],
    machine_cores_ours: 1.5,
    machine_cores_baseline: 1,
  };
}

export function results(peak_tps: number, cpu_s: Record<string, number>): Results {
  const sweep = [aCase("1,000 wallets", 4, peak_tps / 2, {}), aCase("1,000 wallets", 16, peak_tps, cpu_s)];
  return {
    mode: "smoke",
    started_at: "2026-12-01T00:00:00.000Z",
    machine: { cpus: 2, cpu_model: "test", memory_gib: 24, node: "v24" },
    sweep,
    hot: aCase("1,000 wallets, hot", 16, peak_tps / 4, {}),
    scale: [],
    half_rate: {
      rate_tps: peak_tps / 2,
      result: { ...sweep[0]?.ours, dropped: 0 } as Results["half_rate"]["result"],
    },
    cached_get: { reads: 10, errors: 0, get: latency(1) },
    audit: { ok: true, summary: "ok", wait_for_quiet_s: 0 },
    baseline_money_conserved: true,
    profiled: false,
    webhook: { peak: latency(100), unverified: 0 },
  };
}
