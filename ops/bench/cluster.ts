/**
 * `npm run bench -- --cluster`: the same cases on one copy of everything ("single") and on two
 * copies of every service behind HAProxy with three Kafka brokers, topics of three replicas
 * ("cluster"), in one invocation. Each stack's run writes its own report into a subfolder; this
 * puts the two side by side: throughput and latency per case, and CPU per transfer per process at
 * each stack's peak, which is what replication and the extra copies cost on one machine.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { errorKindsLines, formatErrorKinds } from "./errors.ts";
import type { Case, Results } from "./main.ts";

export const stacks = ["single", "cluster"] as const;

const fmt = (n: number, digits = 0): string =>
  n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });

/** CPU µs per completed transfer of each process group over the case's measured window. */
export function cpuPerTransfer_us(c: Case): Map<string, number> {
  const per = new Map<string, number>();
  if (c.ours.throughput_tps === 0) return per;
  for (const [group, seconds] of Object.entries(c.cpu_ours_s))
    per.set(group, (seconds / c.cpu_window_ours_s / c.ours.throughput_tps) * 1e6);
  per.set("whole machine", (c.machine_cores_ours / c.ours.throughput_tps) * 1e6);
  return per;
}

const peakOf = (r: Results): Case =>
  r.sweep.reduce((best, c) => (c.ours.throughput_tps > best.ours.throughput_tps ? c : best));

/** Each case the two stacks both ran, single's first. */
function casePairs(single: Results, cluster: Results): Array<[Case, Case]> {
  const cases = (r: Results): Case[] => [...r.sweep, r.hot, ...r.scale];
  const clusterCases = cases(cluster);
  return cases(single).flatMap((s): Array<[Case, Case]> => {
    const c = clusterCases.find((x) => x.name === s.name && x.concurrency === s.concurrency);
    return c === undefined ? [] : [[s, c]];
  });
}

function caseRows(single: Results, cluster: Results): string[] {
  return casePairs(single, cluster).map(([s, c]) => {
    const ratio =
      s.ours.throughput_tps === 0 ? "-" : (c.ours.throughput_tps / s.ours.throughput_tps).toFixed(2);
    return (
      `| ${s.name} | ${s.concurrency} | ${fmt(s.ours.throughput_tps, 1)} | ${fmt(c.ours.throughput_tps, 1)} | ${ratio} | ` +
      `${s.ours.post.p99_ms} / ${c.ours.post.p99_ms} | ${s.ours.completion.p50_ms} / ${c.ours.completion.p50_ms} | ` +
      `${s.ours.completion.p99_ms} / ${c.ours.completion.p99_ms} | ${s.ours.errors + s.ours.unfinished} / ${c.ours.errors + c.ours.unfinished} |`
    );
  });
}

/** The kinds of each case's errors in either stack, under the table. */
function errorKindRows(single: Results, cluster: Results): string[] {
  return errorKindsLines(
    casePairs(single, cluster).map(([s, c]) => {
      const [in_single, in_cluster] = [
        formatErrorKinds(s.ours.error_kinds),
        formatErrorKinds(c.ours.error_kinds),
      ];
      const said =
        in_single === "" && in_cluster === ""
          ? ""
          : `single ${in_single || "none"}; cluster ${in_cluster || "none"}`;
      return { label: `${s.name}, ${s.concurrency} clients`, said };
    }),
  );
}

function cpuRows(single: Case, cluster: Case): string[] {
  const s = cpuPerTransfer_us(single);
  const c = cpuPerTransfer_us(cluster);
  const groups = [...new Set([...s.keys(), ...c.keys()])].filter((g) => g !== "whole machine").sort();
  const row = (g: string, bold = false): string => {
    const a = s.get(g) ?? 0;
    const b = c.get(g) ?? 0;
    const name = bold ? `**${g}**` : g;
    return `| ${name} | ${fmt(a)} | ${fmt(b)} | ${b - a >= 0 ? "+" : ""}${fmt(b - a)} |`;
  };
  return [...groups.map((g) => row(g)), row("whole machine", true)];
}

/** Reads both stacks' results under `base_dir` and writes `base_dir/report.md`. */
export async function compareStacks(base_dir: string): Promise<void> {
  const [single, cluster] = stacks.map(
    (stack) => JSON.parse(readFileSync(join(base_dir, stack, "results.json"), "utf8")) as Results,
  ) as [Results, Results];
  const [peak_single, peak_cluster] = [peakOf(single), peakOf(cluster)];
  const lines = [
    `# Benchmark: one copy against the cluster, ${single.mode} run of ${single.started_at}`,
    "",
    "Single: one copy of every service, one Kafka broker. Cluster (`npm start -- --replicas 2 --brokers 3`):",
    "two copies of every service behind HAProxy, three Kafka nodes (KRaft), topics with three replicas and",
    "`min.insync.replicas=2`, producers `acks=all`. Both on the same machine, one after the other; each",
    `stack's own report is in [single/](single/report.md) and [cluster/](cluster/report.md). With ${single.machine.cpus} cores`,
    "shared by everything, no gain is expected from copies: the figures say what they cost.",
    "",
    "## Throughput and latency per case",
    "",
    "| case | clients | single (tps) | cluster (tps) | cluster / single | POST p99 (ms) single / cluster | done p50 (ms) | done p99 (ms) | errors |",
    "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ...caseRows(single, cluster),
    "",
    ...errorKindRows(single, cluster),
    `At half of each stack's peak rate (${single.half_rate.rate_tps} and ${cluster.half_rate.rate_tps} tps offered): POST p99 ` +
      `${single.half_rate.result.post.p99_ms} ms and ${cluster.half_rate.result.post.p99_ms} ms. Cached GET p99 ` +
      `${single.cached_get.get.p99_ms} ms and ${cluster.cached_get.get.p99_ms} ms.`,
    "",
    `## CPU per completed transfer at each stack's peak (${peak_single.concurrency} and ${peak_cluster.concurrency} clients)`,
    "",
    "Two copies of a service count as that service; Kafka is every broker together.",
    "",
    "| process | single: CPU µs per transfer | cluster: CPU µs per transfer | difference |",
    "|---|--:|--:|--:|",
    ...cpuRows(peak_single, peak_cluster),
    "",
    `Audit after each run: single ${single.audit.ok ? "OK" : "VIOLATIONS"}, cluster ${cluster.audit.ok ? "OK" : "VIOLATIONS"}.`,
    "",
  ];
  const report = join(base_dir, "report.md");
  writeFileSync(report, lines.join("\n"));
  process.stdout.write(
    `[bench] single ${fmt(peak_single.ours.throughput_tps, 1)} tps, cluster ${fmt(peak_cluster.ours.throughput_tps, 1)} tps at their peaks; report: ${relative(process.cwd(), report)}\n`,
  );
  if (!single.audit.ok || !cluster.audit.ok) process.exitCode = 1;
}
