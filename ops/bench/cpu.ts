/**
 * CPU used by each part of the system during a phase, from /proc (user + system time): the four
 * services, PostgreSQL by database (its backends name their database in their process title),
 * Kafka, FerretDB, Redis, pgbench and this load generator. Processes are found afresh at every
 * sample, so a restarted one is still counted from its own start.
 */
import { readdirSync, readFileSync, readlinkSync } from "node:fs";

const CLOCK_TICKS_PER_S = 100; // USER_HZ: 100 on every Linux that Node supports

export type CpuTicks = Map<string, Map<number, number>>;

function readText(path: string): string | null {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return null; // the process exited between the listing and the read
  }
}

/** Which part of the system a process belongs to, or null when it is none of ours. */
export function groupOf(
  pid: number,
  cmdline: string,
  service_pids: ReadonlyMap<number, string>,
): string | null {
  const service = service_pids.get(pid);
  if (service !== undefined) return service;
  if (pid === process.pid) return "load generator";
  const service_entry = /services\/([a-z-]+)\/src\/main\.ts/.exec(cmdline);
  if (service_entry?.[1] !== undefined) return service_entry[1];
  if (cmdline.startsWith("postgres: ")) {
    // "postgres: dps dps_bench_saga 127.0.0.1(5432) idle", or a background worker.
    const backend = /^postgres: \S+ (\S+) \d+\.\d+\.\d+\.\d+\(\d+\)/.exec(cmdline);
    return backend?.[1] !== undefined ? `postgres (${backend[1]})` : "postgres (background)";
  }
  if (/\/postgres(\s|$)/.test(cmdline)) return "postgres (background)";
  if (cmdline.includes("pgbench")) return "pgbench";
  if (cmdline.includes("redis-server")) return "redis";
  if (cmdline.includes("kafka.Kafka") || cmdline.includes("kafka-server")) return "kafka";
  if (cmdline.includes("ferretdb")) return "ferretdb";
  return null;
}

/** The process's working directory, or null when it cannot be read (gone, or not ours to read). */
function cwdOf(pid: number): string | null {
  try {
    return readlinkSync(`/proc/${pid}/cwd`);
  } catch {
    return null;
  }
}

/**
 * Ticks used so far by every process of ours, per group and pid. With `data_dir`, an engine
 * process counts only if it runs in that folder (each engine of the stack runs in its data
 * folder), so the engines of other stacks on the same machine are left out.
 */
export function sampleCpu(service_pids: ReadonlyMap<number, string>, data_dir?: string): CpuTicks {
  const sample: CpuTicks = new Map();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    const cmdline = readText(`/proc/${pid}/cmdline`)?.replaceAll("\0", " ").trim();
    if (cmdline === undefined || cmdline === "") continue;
    const group = groupOf(pid, cmdline, service_pids);
    if (group === null) continue;
    if (data_dir !== undefined && !service_pids.has(pid) && pid !== process.pid) {
      if (!(cwdOf(pid) ?? "").startsWith(data_dir)) continue;
    }
    const stat = readText(`/proc/${pid}/stat`);
    if (stat === null) continue;
    // Fields after the ")" that closes the command name: utime and stime are the 12th and 13th.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const ticks = Number(fields[11]) + Number(fields[12]);
    if (!Number.isFinite(ticks)) continue;
    let pids = sample.get(group);
    if (pids === undefined) {
      pids = new Map();
      sample.set(group, pids);
    }
    pids.set(pid, ticks);
  }
  return sample;
}

/** CPU seconds per group between two samples (a process that is new in `after` counts in full). */
export function cpuSecondsBetween(before: CpuTicks, after: CpuTicks): Record<string, number> {
  const used: Record<string, number> = {};
  for (const [group, pids] of after) {
    let ticks = 0;
    for (const [pid, now] of pids) ticks += now - (before.get(group)?.get(pid) ?? 0);
    if (ticks > 0) used[group] = Math.round((ticks / CLOCK_TICKS_PER_S) * 100) / 100;
  }
  return used;
}

/** Busy CPU time of the whole machine so far, in seconds (every process, ours or not). */
export function machineBusySeconds(): number {
  const line = readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "";
  // cpu user nice system idle iowait irq softirq steal ...
  const ticks = line.trim().split(/\s+/).slice(1).map(Number);
  const idle = (ticks[3] ?? 0) + (ticks[4] ?? 0);
  const total = ticks.slice(0, 8).reduce((sum, t) => sum + t, 0);
  return (total - idle) / CLOCK_TICKS_PER_S;
}

/**
 * CPU per completed transfer, in ms: the whole machine's (what the targets are stated in; on a
 * shared machine it counts other work too) and the sum of the run's own processes (engines,
 * services, load generator), which other work on the machine does not move.
 */
export function cpuPerTransfer_ms(c: {
  tps: number;
  machine_cores: number;
  processes_cpu_s: Record<string, number>;
  window_s: number;
}): { cpu_ms_per_transfer: number | null; cpu_ms_per_transfer_processes: number | null } {
  if (c.tps <= 0 || c.window_s <= 0)
    return { cpu_ms_per_transfer: null, cpu_ms_per_transfer_processes: null };
  const processes_s = Object.values(c.processes_cpu_s).reduce((sum, s) => sum + s, 0);
  const round = (ms: number) => Math.round(ms * 100) / 100;
  return {
    cpu_ms_per_transfer: round((c.machine_cores / c.tps) * 1000),
    cpu_ms_per_transfer_processes: round((processes_s / c.window_s / c.tps) * 1000),
  };
}
