/**
 * `npm run bench [-- --quick | --long] [--profile] [--out DIR]`: end-to-end transfer throughput
 * and latency of the system through its public API, side by side with the monolithic baseline
 * (pgbench, one PostgreSQL transaction per transfer) in the same run, on the same engines.
 *
 * scripts/stack/cli.ts starts a fresh bench stack and runs this file twice:
 *   --phase run     drive the load, write results.json into the output folder;
 *   --phase report  (after the services stopped and wrote their CPU profiles, if --profile)
 *                   write report.md and the PNG charts, print the summary and, last, one line
 *                   `RESULT {json}`.
 *
 * The phases of a run:
 *   1. wallets: 1,000 opened in bulk (and as many in the baseline's table);
 *      and a webhook endpoint for 100 of them (ops/bench/webhooks.ts times every delivery);
 *   2. throughput against concurrency: closed-loop clients, then pgbench at the same concurrency;
 *   3. a hot wallet in 10% of the transfers, at the concurrency where the system peaked;
 *   4. POST latency at half the peak rate (open loop);
 *   5. cached GET /transactions/:id latency;
 *   6. 100,000 wallets (1,000,000 with --long), at the peak concurrency;
 *   7. the audit, once every transfer is final: the money guarantees still hold.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { join, relative, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import { Authenticator } from "#packages/http/auth.ts";
import { createPool } from "#packages/pg/index.ts";
import { hashPassword } from "../../services/user-service/src/domain.ts";
import { auditOptionsFromEnv, formatAudit, runAudit } from "../audit.ts";
import { type BaselineResult, baselineTotal, ensureBaselineWallets, runBaseline } from "./baseline.ts";
import { type BatchResult, batchLoop } from "./batches.ts";
import { renderBarChartPng, renderLineChartPng } from "./charts.ts";
import { compareStacks } from "./cluster.ts";
import { cpuPerTransfer_ms, cpuSecondsBetween, machineBusySeconds, sampleCpu } from "./cpu.ts";
import { type ErrorKinds, errorKindsLines, errorsSaid, formatErrorKinds } from "./errors.ts";
import { type ReportFigures, reportFigures } from "./figures.ts";
import {
  ApiClient,
  cachedReads,
  closedLoop,
  countedLoop,
  type Latency,
  type LoadResult,
  type LoadTarget,
  type Mix,
  openLoop,
} from "./load.ts";
import { summariseProfile, summaryMarkdown } from "./profile.ts";
import { openWalletsInBulk } from "./wallets.ts";
import { startWebhookProbe, type WebhookProbe } from "./webhooks.ts";

const repoRoot = resolve(import.meta.dirname, "..", "..");
/** The stack's engines run in folders under here (ops/bench/cpu.ts tells them from other stacks' by it). */
const data_dir = join(repoRoot, ".data");
const OPENING_BALANCE_MINOR = 100_000_000;
/**
 * The largest amount of one bench transfer (each moves 1 to this many minor units), small beside
 * the opening balances so that no wallet runs dry; not the API's limit (contracts' AMOUNT_MAX_MINOR).
 */
const BENCH_TRANSFER_AMOUNT_MAX_MINOR = 1_000;
const HOT_SHARE = 0.1;
/** Wallets with a webhook endpoint: their transfers (as payer or payee) are delivered and timed. */
const WEBHOOK_WALLETS = 100;
/** The `Prefer: wait=N` of the waiting-reads case, well past any completion time. */
const WAIT_S = 10;

interface Mode {
  name: "smoke" | "quick" | "full" | "long";
  concurrency: number[];
  warmup_s: number;
  duration_s: number;
  wallets_small: number;
  wallets_large: number[];
}

const modes: Record<Mode["name"], Mode> = {
  // That it starts and reports, not a measure: one short case of each kind, no large wallet set.
  // The warm-up covers a fresh cluster's consumer groups settling (no transfer completes before).
  smoke: {
    name: "smoke",
    concurrency: [4],
    warmup_s: 10,
    duration_s: 3,
    wallets_small: 200,
    wallets_large: [],
  },
  quick: {
    name: "quick",
    concurrency: [8, 32, 64],
    warmup_s: 2,
    duration_s: 8,
    wallets_small: 1_000,
    wallets_large: [100_000],
  },
  full: {
    name: "full",
    concurrency: [1, 4, 16, 32, 64, 128],
    warmup_s: 5,
    duration_s: 20,
    wallets_small: 1_000,
    wallets_large: [100_000],
  },
  long: {
    name: "long",
    concurrency: [1, 4, 16, 32, 64, 128],
    warmup_s: 5,
    duration_s: 30,
    wallets_small: 1_000,
    wallets_large: [100_000, 1_000_000],
  },
};

export interface Case {
  name: string;
  wallets: number;
  hot_share: number;
  concurrency: number;
  ours: Omit<LoadResult, "completed_transfers">;
  baseline: BaselineResult;
  /** CPU seconds used per group while each side ran, over windows of these wall-clock lengths. */
  cpu_ours_s: Record<string, number>;
  cpu_baseline_s: Record<string, number>;
  cpu_window_ours_s: number;
  cpu_window_baseline_s: number;
  /** Wall-clock window of the system's measured run (epoch ms), to pick its webhook deliveries. */
  window_ms: [number, number];
  /** Whole-machine CPU over the same windows, in cores busy. */
  machine_cores_ours: number;
  machine_cores_baseline: number;
}

export interface Results {
  mode: Mode["name"];
  started_at: string;
  machine: { cpus: number; cpu_model: string; memory_gib: number; node: string };
  sweep: Case[];
  hot: Case;
  /** The peak case with the clients reading by `Prefer: wait` instead of polling (absent in older results). */
  waiting?: Case;
  scale: Case[];
  /**
   * The peak's 1,000-wallet case run again just before the larger sets, on the same grown
   * databases: what they are measured against (absent in results written before it).
   */
  scale_reference?: Case;
  half_rate: { rate_tps: number; result: Omit<LoadResult, "completed_transfers"> & { dropped: number } };
  cached_get: { reads: number; errors: number; error_kinds?: ErrorKinds; get: Latency };
  /** Absent in results written before the batch workload. */
  batches?: BatchResult;
  audit: { ok: boolean; summary: string; wait_for_quiet_s: number };
  baseline_money_conserved: boolean;
  profiled: boolean;
  /** The services exported spans to an OTLP sink (`--tracing`); absent in results written before the flag. */
  tracing?: boolean;
  /** Final status to the receiver, for the transfers that became final during the peak case. */
  /** batch_peak: events made final during the batch workload (absent in results written before it). */
  webhook: { peak: Latency; batch_peak?: Latency; unverified: number };
}

function required(name: string): string {
  const value = process.env[name];
  if (value === undefined || value === "")
    throw new Error(`${name} must be set (run through \`npm run bench\`)`);
  return value;
}

const say = (line: string): void => void process.stdout.write(`[bench] ${line}\n`);
const withoutIds = (r: LoadResult): Omit<LoadResult, "completed_transfers"> => {
  const { completed_transfers: _, ...rest } = r;
  return rest;
};

// biome-ignore lint/complexity/noExcessiveLinesPerFunction: the benchmark's phases in the order they run, sharing one run's wallets, API client and CPU samples; the measurement order is the point
async function runPhase(
  mode: Mode,
  out_dir: string,
  profiled: boolean,
  tracing: boolean,
  counted: CountedRun | RateRun | null = null,
): Promise<void> {
  const started_at = new Date().toISOString();
  const transaction_url = required("TEST_TRANSACTION_SERVICE_URL");
  const ledger_url = required("LEDGER_DATABASE_URL");
  const baseline_url = ledger_url.replace(/\/[^/]+$/, "/dps_bench_baseline");
  const pgbench = required("BENCH_PGBENCH");
  const service_pids = new Map(
    Object.entries(JSON.parse(required("BENCH_SERVICE_PIDS")) as Record<string, number>).map(
      // Copies count under their service's name ("transaction-service-2" is transaction-service).
      ([name, pid]) => [pid, name.replace(/-\d+$/, "")],
    ),
  );
  const auth = new Authenticator({ token_secret: required("AUTH_TOKEN_SECRET"), token_ttl_s: 4 * 3600 });
  const tokens = new Map<number, Promise<string>>();
  const concurrency_max = Math.max(...mode.concurrency);
  const api = new ApiClient(transaction_url, concurrency_max * 2, 30_000);
  const target: LoadTarget = {
    api,
    tokenFor(user_id) {
      let token = tokens.get(user_id);
      if (token === undefined) {
        token = auth.issueUserToken(user_id).then((t) => t.access_token);
        tokens.set(user_id, token);
      }
      return token;
    },
    amount_max_minor: BENCH_TRANSFER_AMOUNT_MAX_MINOR,
    final_timeout_ms: 60_000,
  };

  // 1. Wallets, opened in bulk through the ledger's own journal (one deposit each).
  const ledger = createPool(ledger_url, { max: 2, application_name: "bench", statement_timeout_ms: 600_000 });
  const password_hash = await hashPassword("bench-password");
  const wallets: number[] = [];
  const openWallets = async (count: number): Promise<void> => {
    const t0 = Date.now();
    for (let first = wallets.length; first < count; first += 50_000) {
      const batch = Math.min(50_000, count - first);
      wallets.push(
        ...(await openWalletsInBulk(ledger, {
          username_prefix: "bench_",
          first,
          count: batch,
          password_hash,
          opening_balance: OPENING_BALANCE_MINOR,
        })),
      );
    }
    // Fresh statistics after a bulk load, or the planner takes the new tables for empty ones
    // (the audit's joins then run for minutes).
    await ledger.query("VACUUM ANALYZE users, accounts, deposits, postings, entries");
    await ensureBaselineWallets(baseline_url, count, OPENING_BALANCE_MINOR);
    say(`${count} wallets ready (system and baseline) in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  };
  await openWallets(mode.wallets_small);
  const webhooks = await startWebhookProbe({
    api,
    tokenFor: target.tokenFor,
    user_ids: wallets.slice(0, WEBHOOK_WALLETS),
  });

  if (counted !== null) {
    if (counted.kind === "rate") {
      await rateRun(target, wallets.slice(0, mode.wallets_small), counted.rate_tps, mode, service_pids);
    } else {
      await countedRun(target, wallets.slice(0, mode.wallets_small), counted, service_pids, ledger, webhooks);
    }
    api.close();
    await webhooks.close();
    await ledger.end();
    return;
  }

  const runCase = async (
    name: string,
    wallet_count: number,
    hot_share: number,
    concurrency: number,
    load: LoadTarget = target,
  ): Promise<Case> => {
    const mix: Mix = { wallets: wallets.slice(0, wallet_count), hot_share };
    const before = sampleCpu(service_pids, data_dir);
    const machine_before = machineBusySeconds();
    const t_before = performance.now();
    const window_from_ms = Date.now();
    const ours = await closedLoop(load, mix, {
      concurrency,
      warmup_s: mode.warmup_s,
      duration_s: mode.duration_s,
    });
    const window_to_ms = Date.now();
    const middle = sampleCpu(service_pids, data_dir);
    const machine_middle = machineBusySeconds();
    const t_middle = performance.now();
    await sleep(1_000); // let the last records settle before the baseline takes the machine
    const mid_settled = sampleCpu(service_pids, data_dir);
    const machine_mid_settled = machineBusySeconds();
    const t_mid_settled = performance.now();
    // pgbench and its connections are gone once it exits: sample them just before it ends.
    let late = mid_settled;
    let machine_late = machine_mid_settled;
    let t_late = t_mid_settled;
    const late_timer = setTimeout(
      () => {
        late = sampleCpu(service_pids, data_dir);
        machine_late = machineBusySeconds();
        t_late = performance.now();
      },
      Math.max(500, (mode.duration_s - 1) * 1000),
    );
    const baseline = await runBaseline({
      pgbench,
      database_url: baseline_url,
      concurrency,
      duration_s: mode.duration_s,
      wallets: wallet_count,
      hot_share,
      amount_max_minor: BENCH_TRANSFER_AMOUNT_MAX_MINOR,
      timeout_ms: (mode.duration_s + 60) * 1000,
    });
    clearTimeout(late_timer);
    say(
      `${name.padEnd(22)} c=${String(concurrency).padStart(3)}  ours ${ours.throughput_tps.toFixed(0).padStart(6)} tps ` +
        `(POST p99 ${ours.post.p99_ms} ms, done p99 ${ours.completion.p99_ms} ms, ${errorsSaid(ours.errors, ours.error_kinds)})  ` +
        `baseline ${baseline.throughput_tps.toFixed(0).padStart(6)} tps (p99 ${baseline.latency.p99_ms} ms)  ` +
        `ratio ${(ours.throughput_tps / baseline.throughput_tps).toFixed(3)}`,
    );
    lastCompleted = ours.completed_transfers.length > 0 ? ours.completed_transfers : lastCompleted;
    return {
      name,
      wallets: wallet_count,
      hot_share,
      concurrency,
      ours: withoutIds(ours),
      baseline,
      cpu_ours_s: cpuSecondsBetween(before, middle),
      cpu_baseline_s: cpuSecondsBetween(mid_settled, late),
      cpu_window_ours_s: (t_middle - t_before) / 1000,
      cpu_window_baseline_s: (t_late - t_mid_settled) / 1000,
      window_ms: [window_from_ms, window_to_ms],
      machine_cores_ours: (machine_middle - machine_before) / ((t_middle - t_before) / 1000),
      machine_cores_baseline: (machine_late - machine_mid_settled) / ((t_late - t_mid_settled) / 1000),
    };
  };
  let lastCompleted: { id: string; reader: number }[] = [];

  // 2. Throughput against concurrency, uniform over the small set of wallets.
  const sweep: Case[] = [];
  for (const concurrency of mode.concurrency) {
    sweep.push(await runCase(`${mode.wallets_small} wallets`, mode.wallets_small, 0, concurrency));
  }
  const peak = sweep.reduce((best, c) => (c.ours.throughput_tps > best.ours.throughput_tps ? c : best));
  const cached_sample = lastCompleted;

  // 3. A hot wallet.
  const hot = await runCase(
    `${mode.wallets_small} wallets, hot`,
    mode.wallets_small,
    HOT_SHARE,
    peak.concurrency,
  );

  // 3b. The peak case again, the clients reading with `Prefer: wait` instead of polling: what the
  // client's side of the polling costs, told apart from the system's own gain.
  const waiting = await runCase(
    `${mode.wallets_small} wallets, waiting`,
    mode.wallets_small,
    0,
    peak.concurrency,
    { ...target, wait_s: WAIT_S },
  );

  // 4. POST latency at half the peak rate.
  const rate_tps = Math.max(1, Math.round(peak.ours.throughput_tps / 2));
  const half = await openLoop(
    target,
    { wallets: wallets.slice(0, mode.wallets_small), hot_share: 0 },
    { rate_tps, duration_s: mode.duration_s, in_flight_max: concurrency_max * 8 },
  );
  say(
    `half the peak rate     ${rate_tps} tps offered: POST p50 ${half.post.p50_ms} / p95 ${half.post.p95_ms} / p99 ${half.post.p99_ms} ms; ` +
      `done p99 ${half.completion.p99_ms} ms; ${half.dropped} dropped, ${errorsSaid(half.errors, half.error_kinds)}`,
  );

  // 5. Cached reads of final transfers.
  const cached_get = await cachedReads(target, cached_sample, {
    concurrency: 8,
    warmup_s: mode.warmup_s,
    duration_s: Math.min(10, mode.duration_s),
  });
  say(
    `cached GET             p50 ${cached_get.get.p50_ms} ms, p99 ${cached_get.get.p99_ms} ms over ${cached_get.reads} reads`,
  );

  // 5b. Batches of 1,000 on the same wallets, completion seen by reading the batch.
  const batch_window_from_ms = Date.now();
  const batches = await batchLoop(target, wallets.slice(0, mode.wallets_small), {
    batch_size: 1_000,
    concurrency: 2,
    duration_s: mode.duration_s,
    wait_s: 10,
  });
  say(
    `batches of 1,000        ${batches.batch_tps} completed items/s; batch done p50 ${batches.batch_p50_ms} / p99 ${batches.batch_p99_ms} ms; ${errorsSaid(batches.errors, batches.error_kinds)}`,
  );
  const batch_window_ms: [number, number] = [batch_window_from_ms, Date.now()];

  // 6. More wallets.
  // Each larger set is compared with the small set run just before it, on the same databases
  // (grown by every case so far), not with the sweep's best run: the ratio then measures the
  // wallets, not the hour of the run or the luck of the best of six.
  const scale: Case[] = [];
  let scale_reference: Case | undefined;
  for (const count of mode.wallets_large) {
    await openWallets(count);
    scale_reference ??= await runCase(
      `${mode.wallets_small} wallets, again`,
      mode.wallets_small,
      0,
      peak.concurrency,
    );
    scale.push(await runCase(`${count} wallets`, count, 0, peak.concurrency));
  }
  api.close();

  // 7. The audit, once nothing is in flight.
  const quiet_t0 = Date.now();
  let audit = await runAudit(auditOptionsFromEnv(process.env, true));
  while (!audit.ok && audit.transfers.in_flight > 0 && Date.now() - quiet_t0 < 120_000) {
    await sleep(2_000);
    audit = await runAudit(auditOptionsFromEnv(process.env, true));
  }
  const wait_for_quiet_s = Math.round((Date.now() - quiet_t0) / 100) / 10;
  say(`audit: ${audit.ok ? "OK" : "VIOLATIONS"} (${audit.transfers.total} transfers; ${wait_for_quiet_s} s)`);
  // The baseline moves money too: its wallets must still hold exactly what they were opened with.
  // Every delivery has landed by now (the audit waited for quiet): the peak case's figure.
  const webhook = {
    peak: webhooks.latencyBetween(...peak.window_ms),
    batch_peak: webhooks.latencyBetween(...batch_window_ms),
    unverified: webhooks.unverified,
  };
  say(
    `webhooks at the peak   final status to receiver p50 ${webhook.peak.p50_ms} ms, p99 ${webhook.peak.p99_ms} ms ` +
      `over ${webhook.peak.count} events; ${webhook.unverified} bad signatures`,
  );
  say(
    `webhooks at the batches final status to receiver p50 ${webhook.batch_peak.p50_ms} ms, p99 ${webhook.batch_peak.p99_ms} ms over ${webhook.batch_peak.count} events`,
  );
  await webhooks.close();
  const baseline_money_conserved =
    (await baselineTotal(baseline_url)) === BigInt(wallets.length) * BigInt(OPENING_BALANCE_MINOR);
  if (!baseline_money_conserved)
    say("the baseline's wallets do not add up: its numbers are not to be trusted");
  await ledger.end();

  const results: Results = {
    mode: mode.name,
    started_at,
    machine: {
      cpus: cpus().length,
      cpu_model: cpus()[0]?.model ?? "unknown",
      memory_gib: Math.round(totalmem() / 2 ** 30),
      node: process.version,
    },
    sweep,
    hot,
    waiting,
    scale,
    scale_reference,
    half_rate: { rate_tps, result: { ...withoutIds(half), dropped: half.dropped } },
    cached_get,
    batches,
    audit: { ok: audit.ok, summary: formatAudit(audit), wait_for_quiet_s },
    baseline_money_conserved,
    profiled,
    tracing,
    webhook,
  };
  mkdirSync(out_dir, { recursive: true });
  writeFileSync(join(out_dir, "results.json"), `${JSON.stringify(results, null, 2)}\n`);
  if (!audit.ok) {
    process.stdout.write(`${formatAudit(audit)}\n`);
    process.exitCode = 1;
  }
}

/** Clients of the counted run: enough to fill the services' batches, few enough for a busy machine. */
const COUNTED_CONCURRENCY = 16;
const IDLE_SAMPLE_S = 10;
const COUNTED_WARMUP = 200;

/** A counted run: N single transfers (`--count N`) or N disbursements of 1,000 items (`--batches N`). */
export type CountedRun = { kind: "transfers" | "batches"; count: number };
/** An open loop at `rate_tps` transfers per second (`--rate N`) for the mode's case length. */
export type RateRun = { kind: "rate"; rate_tps: number };

const COUNTED_BATCH_SIZE = 1_000;

/** Runs the counted load; returns how many transfers ended final and a line that says how. */
async function countedLoad(
  target: LoadTarget,
  wallets: number[],
  run: CountedRun,
): Promise<{ finals: number; duration_s: number; summary: string }> {
  if (run.kind === "transfers") {
    const r = await countedLoop(
      target,
      { wallets, hot_share: 0 },
      { concurrency: COUNTED_CONCURRENCY, transfers: run.count },
    );
    return {
      finals: r.completed + r.failed,
      duration_s: r.duration_s,
      summary: `${run.count} transfers by ${COUNTED_CONCURRENCY} clients in ${r.duration_s.toFixed(1)} s, ${r.completed} completed, ${r.failed} failed, ${errorsSaid(r.errors, r.error_kinds)}, ${r.gets_per_transfer} GETs each`,
    };
  }
  const r = await batchLoop(target, wallets, {
    batch_size: COUNTED_BATCH_SIZE,
    concurrency: 2,
    duration_s: 3_600,
    wait_s: 10,
    batches_max: run.count,
  });
  return {
    finals: r.items_completed + r.items_failed,
    duration_s: r.duration_s,
    summary: `${run.count} batches of ${COUNTED_BATCH_SIZE} by 2 clients in ${r.duration_s.toFixed(1)} s: ${r.batch_tps} completed items/s, ${r.items_completed} completed, ${r.items_failed} failed, ${errorsSaid(r.errors, r.error_kinds)}, batch p50 ${r.batch_p50_ms} / p99 ${r.batch_p99_ms} ms`,
  };
}

/**
 * `--count N` / `--batches N`: the run, and the CPU each process spent per transfer (its idle
 * rate, measured first, taken out), with the transactions each database committed per transfer.
 * On a shared machine these move little with other work, unlike throughput: compare two runs.
 */
async function countedRun(
  target: LoadTarget,
  wallets: number[],
  counted: CountedRun,
  service_pids: ReadonlyMap<number, string>,
  ledger: ReturnType<typeof createPool>,
  webhooks: WebhookProbe,
): Promise<void> {
  const commits = async (): Promise<Record<string, number>> => {
    const { rows } = await ledger.query<{ datname: string; xact_commit: string }>(
      "SELECT datname, xact_commit FROM pg_stat_database WHERE datname LIKE 'dps_%'",
    );
    return Object.fromEntries(rows.map((r) => [r.datname, Number(r.xact_commit)]));
  };
  // Warm (JIT, pools, caches), then let the warm-up's last records settle before the idle sample.
  await countedLoad(target, wallets, {
    kind: counted.kind,
    count: counted.kind === "transfers" ? COUNTED_WARMUP : 1,
  });
  await sleep(3_000);
  const idle_from = sampleCpu(service_pids, data_dir);
  await sleep(IDLE_SAMPLE_S * 1000);
  const idle_s = cpuSecondsBetween(idle_from, sampleCpu(service_pids, data_dir));
  const admin = createPool(required("BENCH_ADMIN_DATABASE_URL"), { max: 1, application_name: "bench" });
  const statements = await statementStats(admin);
  const messages_before = await kafkaMessagesHandled();
  const commits_before = await commits();
  const before = sampleCpu(service_pids, data_dir);
  const run_from_ms = Date.now();
  const run = await countedLoad(target, wallets, counted);
  const used_s = cpuSecondsBetween(before, sampleCpu(service_pids, data_dir));
  const run_to_ms = Date.now();
  const commits_after = await commits();
  const finals = Math.max(1, run.finals);
  say(`counted run: ${run.summary}`);
  const per_transfer: Record<string, { cpu_us: number; cpu_us_less_idle: number }> = {};
  for (const group of Object.keys(used_s).sort()) {
    const used = used_s[group] ?? 0;
    const idle = ((idle_s[group] ?? 0) / IDLE_SAMPLE_S) * run.duration_s;
    per_transfer[group] = {
      cpu_us: Math.round((used / finals) * 1e6),
      cpu_us_less_idle: Math.round((Math.max(0, used - idle) / finals) * 1e6),
    };
    say(
      `  ${group.padEnd(32)} ${fmt(per_transfer[group].cpu_us).padStart(8)} µs  (${fmt(per_transfer[group].cpu_us_less_idle).padStart(8)} less idle)`,
    );
  }
  const commits_per_transfer: Record<string, number> = {};
  for (const [db, n] of Object.entries(commits_after)) {
    commits_per_transfer[db] = Math.round(((n - (commits_before[db] ?? 0)) / finals) * 100) / 100;
  }
  say(`  commits per transfer: ${JSON.stringify(commits_per_transfer)}`);
  const messages_after = await kafkaMessagesHandled();
  const messages_per_transfer: Record<string, number> = {};
  for (const [topic, n] of Object.entries(messages_after)) {
    messages_per_transfer[topic] = Math.round(((n - (messages_before[topic] ?? 0)) / finals) * 1000) / 1000;
  }
  say(`  Kafka messages handled per transfer: ${JSON.stringify(messages_per_transfer)}`);
  for (const line of await statements.top(finals)) say(line);
  await admin.end();
  const webhook = await settledWebhookLatency(webhooks, run_from_ms, run_to_ms);
  say(
    `  webhooks, final status to receiver: p50 ${webhook.p50_ms} ms, p99 ${webhook.p99_ms} ms over ${webhook.count} events (${WEBHOOK_WALLETS} wallets' endpoints)`,
  );
  process.stdout.write(
    `COUNTED ${JSON.stringify({ kind: counted.kind, count: counted.count, finals: run.finals, per_transfer, commits_per_transfer, webhook })}\n`,
  );
}

/**
 * `--rate N`: transfers arriving at N per second (an open loop, as the half-peak case), warmed up
 * for the mode's warm-up, then measured for its case length: latency at a rate of one's choosing,
 * and the CPU each process spent per transfer at that rate.
 */
async function rateRun(
  target: LoadTarget,
  wallets: number[],
  rate_tps: number,
  mode: Mode,
  service_pids: ReadonlyMap<number, string>,
): Promise<void> {
  const mix: Mix = { wallets, hot_share: 0 };
  const in_flight_max = Math.max(64, rate_tps);
  await openLoop(target, mix, { rate_tps, duration_s: Math.max(2, mode.warmup_s), in_flight_max });
  const before = sampleCpu(service_pids, data_dir);
  const r = await openLoop(target, mix, { rate_tps, duration_s: mode.duration_s, in_flight_max });
  const used_s = cpuSecondsBetween(before, sampleCpu(service_pids, data_dir));
  say(
    `${rate_tps} tps offered for ${mode.duration_s} s: POST p50 ${r.post.p50_ms} / p95 ${r.post.p95_ms} / p99 ${r.post.p99_ms} / max ${r.post.max_ms} ms; ` +
      `done p50 ${r.completion.p50_ms} / p99 ${r.completion.p99_ms} ms; ${r.completed} completed, ${r.dropped} dropped, ${errorsSaid(r.errors, r.error_kinds)}`,
  );
  const finals = Math.max(1, r.completed + r.failed);
  for (const group of Object.keys(used_s).sort()) {
    say(
      `  ${group.padEnd(32)} ${fmt(Math.round(((used_s[group] ?? 0) / finals) * 1e6)).padStart(8)} µs per transfer`,
    );
  }
}

/**
 * The webhook latency of the events that became final in [from_ms, to_ms), once their deliveries
 * have stopped arriving (no new one for 2 s, or 60 s at most): the last ones of a burst are the
 * p99, and they arrive after the load has ended.
 */
async function settledWebhookLatency(
  webhooks: WebhookProbe,
  from_ms: number,
  to_ms: number,
): Promise<Latency> {
  const deadline_ms = Date.now() + 60_000;
  let latency = webhooks.latencyBetween(from_ms, to_ms);
  while (Date.now() < deadline_ms) {
    await sleep(2_000);
    const now = webhooks.latencyBetween(from_ms, to_ms);
    if (now.count === latency.count) return now;
    latency = now;
  }
  return latency;
}

/**
 * Kafka messages the services' consumers finished with, by topic, from their own counters
 * (dps_kafka_messages_handled_total on each internal listener); a service that does not answer
 * counts nothing.
 */
async function kafkaMessagesHandled(): Promise<Record<string, number>> {
  const totals: Record<string, number> = {};
  const ports = ["TRANSACTION_SERVICE_INTERNAL_PORT", "TRANSACTION_COMMAND_SERVICE_INTERNAL_PORT"]
    .map((name) => process.env[name])
    .filter((port): port is string => port !== undefined);
  for (const port of ports) {
    const text = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(5_000) })
      .then((r) => r.text())
      .catch(() => "");
    for (const line of text.split("\n")) {
      const match = /^dps_kafka_messages_handled_total\{[^}]*topic="([^"]+)"[^}]*\} (\S+)$/.exec(line);
      if (match !== null) totals[match[1] as string] = (totals[match[1] as string] ?? 0) + Number(match[2]);
    }
  }
  return totals;
}

const STATEMENTS_SHOWN = 15;

/**
 * PostgreSQL's statement statistics (pg_stat_statements, loaded by the stack's engine), reset
 * now; `top` gives the costliest statements since, per transfer. Absent when the engine was
 * started without the library (then `top` says so).
 */
async function statementStats(
  db: ReturnType<typeof createPool>,
): Promise<{ top(finals: number): Promise<string[]> }> {
  try {
    await db.query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements");
    await db.query("SELECT pg_stat_statements_reset()");
  } catch (error) {
    const why = (error as Error).message;
    return { top: async () => [`  statement statistics unavailable: ${why}`] };
  }
  return {
    async top(finals) {
      const { rows } = await db.query<{ datname: string; calls: string; total_ms: number; query: string }>(
        `SELECT d.datname, s.calls, s.total_exec_time AS total_ms, left(regexp_replace(s.query, '\\s+', ' ', 'g'), 110) AS query
           FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
          ORDER BY s.total_exec_time DESC LIMIT ${STATEMENTS_SHOWN}`,
      );
      return [
        "  costliest statements (µs per transfer, calls per transfer, database, statement):",
        ...rows.map(
          (r) =>
            `  ${fmt((r.total_ms * 1000) / finals).padStart(8)} ${(Number(r.calls) / finals).toFixed(3).padStart(7)}  ${r.datname.padEnd(18)} ${r.query}`,
        ),
      ];
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Report.

const fmt = (n: number, digits = 0): string =>
  n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });

/**
 * The peak case read two ways. Every other figure comes from clients that poll; here the same
 * clients hold one read open with `Prefer: wait` until the transfer is final, so the gain from the
 * client's side is told apart from the system's own.
 */
function waitingSection(polled: Case, waiting: Case | undefined): string[] {
  if (waiting === undefined) return [];
  const cpu = (c: Case) =>
    c.ours.throughput_tps === 0 ? "-" : fmt((c.machine_cores_ours / c.ours.throughput_tps) * 1000, 2);
  const row = (how: string, c: Case) =>
    `| ${how} | ${fmt(c.ours.throughput_tps, 1)} | ${c.ours.gets_per_transfer} | ${c.ours.completion.p50_ms} / ${c.ours.completion.p99_ms} | ${cpu(c)} |`;
  return [
    "## Polling against waiting reads",
    "",
    `The peak case (${polled.concurrency} clients, ${fmt(polled.wallets)} wallets) again, each client reading its transfer with \`Prefer: wait=${WAIT_S}\` (one GET held until the status is final) instead of polling. A transfer still counts only once the client has seen it final. Every other figure of this report is with polling.`,
    "",
    "| reads | tps | GETs per transfer | done p50 / p99 (ms) | CPU ms per transfer (whole machine) |",
    "|---|--:|--:|--:|--:|",
    row("polling", polled),
    row(`\`Prefer: wait=${WAIT_S}\``, waiting),
    "",
  ];
}

function cpuTable(c: Case): string[] {
  const groups = [...new Set([...Object.keys(c.cpu_ours_s), ...Object.keys(c.cpu_baseline_s)])].sort();
  // Cores busy over the window, divided by the steady throughput: CPU per completed transfer.
  const per = (cores: number, tps: number): string => (tps === 0 ? "-" : fmt((cores / tps) * 1e6, 0));
  const rows = groups.map((g) => {
    const ours = c.cpu_ours_s[g] ?? 0;
    const base = c.cpu_baseline_s[g] ?? 0;
    const ours_cores = ours / c.cpu_window_ours_s;
    const base_cores = base / c.cpu_window_baseline_s;
    return `| ${g} | ${fmt(ours_cores, 2)} | ${per(ours_cores, c.ours.throughput_tps)} | ${fmt(base_cores, 2)} | ${per(base_cores, c.baseline.throughput_tps)} |`;
  });
  const machine = `| **whole machine** | ${fmt(c.machine_cores_ours, 2)} | ${per(c.machine_cores_ours, c.ours.throughput_tps)} | ${fmt(c.machine_cores_baseline, 2)} | ${per(c.machine_cores_baseline, c.baseline.throughput_tps)} |`;
  return [
    "| process | ours: cores busy | ours: CPU µs per transfer | baseline: cores busy | baseline: CPU µs per transfer |",
    "|---|--:|--:|--:|--:|",
    ...rows,
    machine,
  ];
}

function caseRow(c: Case): string {
  const o = c.ours;
  return (
    `| ${c.name} | ${c.concurrency} | **${fmt(o.throughput_tps, 1)}** | ${fmt(c.baseline.throughput_tps, 1)} | ` +
    `${(o.throughput_tps / c.baseline.throughput_tps).toFixed(3)} | ${o.post.p50_ms} / ${o.post.p95_ms} / ${o.post.p99_ms} | ` +
    `${o.completion.p50_ms} / ${o.completion.p99_ms} | ${c.baseline.latency.p50_ms} / ${c.baseline.latency.p99_ms} | ` +
    `${o.completed} | ${o.failed} | ${o.errors + o.unfinished} |`
  );
}

/** The kinds of the errors in a table of cases, under it. */
const caseErrorKinds = (cases: Case[]): string[] =>
  errorKindsLines(
    cases.map((c) => ({
      label: `${c.name}, ${c.concurrency} clients`,
      said: formatErrorKinds(c.ours.error_kinds),
    })),
  );

const CASE_HEADER = [
  "| case | clients | ours (tps) | baseline (tps) | ratio | POST p50 / p95 / p99 (ms) | done p50 / p99 (ms) | baseline p50 / p99 (ms) | completed | refused | errors |",
  "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
];

async function reportPhase(out_dir: string): Promise<void> {
  const results = JSON.parse(readFileSync(join(out_dir, "results.json"), "utf8")) as Results;
  const figures = reportFigures(results);
  await writeCharts(out_dir, results, figures);
  const profile_sections = profileSections(results);
  const lines = [...reportHead(results, figures), ...reportBody(results, figures, profile_sections)];
  writeFileSync(
    join(out_dir, "report.md"),
    lines.filter((l, i, all) => !(l === "" && all[i - 1] === "")).join("\n"),
  );
  const result = resultFigures(results, figures);
  say(`report: ${relative(process.cwd(), join(out_dir, "report.md"))} (charts beside it)`);
  process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
}

async function writeCharts(out_dir: string, results: Results, { peak, cases }: ReportFigures): Promise<void> {
  // Charts.
  const throughputPng = await renderLineChartPng({
    title: "Completed transfers per second against concurrency",
    x_label: "concurrent clients",
    y_label: "transfers per second",
    x_log: true,
    series: [
      {
        name: "this system (saga)",
        points: results.sweep.map((c) => ({ x: c.concurrency, y: c.ours.throughput_tps })),
      },
      {
        name: "baseline (pgbench)",
        points: results.sweep.map((c) => ({ x: c.concurrency, y: c.baseline.throughput_tps })),
      },
    ],
  });
  writeFileSync(join(out_dir, "throughput.png"), throughputPng);
  const latencyPng = await renderLineChartPng({
    title: "Latency percentiles against concurrency",
    x_label: "concurrent clients",
    y_label: "milliseconds",
    x_log: true,
    series: [
      { name: "POST p50", points: results.sweep.map((c) => ({ x: c.concurrency, y: c.ours.post.p50_ms })) },
      { name: "POST p99", points: results.sweep.map((c) => ({ x: c.concurrency, y: c.ours.post.p99_ms })) },
      {
        name: "to COMPLETED p50",
        points: results.sweep.map((c) => ({ x: c.concurrency, y: c.ours.completion.p50_ms })),
      },
      {
        name: "to COMPLETED p99",
        points: results.sweep.map((c) => ({ x: c.concurrency, y: c.ours.completion.p99_ms })),
      },
      {
        name: "baseline p99",
        points: results.sweep.map((c) => ({ x: c.concurrency, y: c.baseline.latency.p99_ms })),
      },
    ],
  });
  writeFileSync(join(out_dir, "latency.png"), latencyPng);
  const scalePng = await renderBarChartPng({
    title: `Throughput by workload at ${peak.concurrency} clients`,
    y_label: "transfers per second",
    bars: cases.flatMap((c) => [
      { group: c.name, name: "this system", value: c.ours.throughput_tps },
      { group: c.name, name: "baseline", value: c.baseline.throughput_tps },
    ]),
  });
  writeFileSync(join(out_dir, "workloads.png"), scalePng);
}

/** Profiles, when the services ran under --cpu-prof. */
function profileSections(results: Results): string[] {
  const profile_dir = join(repoRoot, ".data", "bench", "profiles");
  const profile_sections: string[] = [];
  if (results.profiled && existsSync(profile_dir)) {
    for (const file of readdirSync(profile_dir)
      .filter((f) => f.endsWith(".cpuprofile"))
      .sort()) {
      const summary = summariseProfile(join(profile_dir, file), { top: 12, repo_root: repoRoot });
      profile_sections.push(summaryMarkdown(file.replace(/\.cpuprofile$/, ""), summary, 12));
    }
  }
  return profile_sections;
}

/** The title, the machine and the summary table. */
function reportHead(results: Results, figures: ReportFigures): string[] {
  const { peak, baseline_peak, small, large, reference, ratio, hot_vs_uniform, large_vs_small, half } =
    figures;
  const mode = modes[results.mode];
  const target = (ok: boolean): string => (ok ? "met" : "**not met**");
  const cpu = cpuPerTransfer_ms({
    tps: small.ours.throughput_tps,
    machine_cores: small.machine_cores_ours,
    processes_cpu_s: small.cpu_ours_s,
    window_s: small.cpu_window_ours_s,
  });
  return [
    `# Benchmark: ${results.mode} run of ${results.started_at}`,
    "",
    `Machine: ${results.machine.cpus} × ${results.machine.cpu_model}, ${results.machine.memory_gib} GiB, Node ${results.machine.node}. ` +
      "Every engine, every service, the load generator and pgbench share these cores: both sides pay for their clients.",
    `Each case: ${mode.warmup_s} s warm-up, then ${mode.duration_s} s measured for the system, then ${mode.duration_s} s of pgbench at the same concurrency.` +
      (results.profiled ? " **Services ran under --cpu-prof (slower than usual).**" : "") +
      (results.tracing
        ? " **Tracing on: every service exported its spans over OTLP/HTTP to a sink in the bench (`--tracing`).**"
        : ""),
    "",
    "## Summary",
    "",
    "| figure | value | target |",
    "|---|--:|---|",
    `| peak throughput (completed, seen through the API) | ${fmt(peak.ours.throughput_tps, 1)} tps at ${peak.concurrency} clients | |`,
    `| baseline peak (pgbench, one transaction per transfer) | ${fmt(baseline_peak.baseline.throughput_tps, 1)} tps at ${baseline_peak.concurrency} clients | |`,
    `| ratio (peak / baseline peak) | ${ratio.toFixed(3)} | ≥ 0.25: ${target(ratio >= 0.25)} |`,
    `| CPU per completed transfer at the peak, whole machine | ${cpu.cpu_ms_per_transfer} ms (the run's processes: ${cpu.cpu_ms_per_transfer_processes} ms) | ≤ 2.5 ms: ${target(cpu.cpu_ms_per_transfer !== null && cpu.cpu_ms_per_transfer <= 2.5)} |`,
    `| POST p99 at half the peak rate (${results.half_rate.rate_tps} tps offered) | ${half.post.p99_ms} ms | ≤ 25 ms: ${target(half.post.p99_ms <= 25)} |`,
    `| cached GET /transactions/:id p99 | ${results.cached_get.get.p99_ms} ms (p50 ${results.cached_get.get.p50_ms} ms) | ≤ 3 ms: ${target(results.cached_get.get.p99_ms <= 3)} |`,
    large_vs_small === null || large === undefined
      ? ""
      : `| ${fmt(large.wallets)} wallets / ${fmt(reference.wallets)} wallets ${reference === small ? "(the peak)" : "(run just before it)"} | ${(large_vs_small * 100).toFixed(0)} %${figures.large_vs_peak === null || reference === small ? "" : ` (${(figures.large_vs_peak * 100).toFixed(0)} % of the sweep's peak)`} | ≥ 90 %: ${target(large_vs_small >= 0.9)} |`,
    `| hot wallet (10% of transfers) / uniform | ${(hot_vs_uniform * 100).toFixed(0)} % | ≥ 80 %: ${target(hot_vs_uniform >= 0.8)} |`,
    results.batches === undefined
      ? ""
      : `| batches of 1,000: completed items per second / baseline peak | ${fmt(results.batches.batch_tps, 1)} tps / ${fmt(baseline_peak.baseline.throughput_tps, 1)} = ${(results.batches.batch_tps / baseline_peak.baseline.throughput_tps).toFixed(3)} | ≥ 1.5: ${target(results.batches.batch_tps / baseline_peak.baseline.throughput_tps >= 1.5)} |`,
    `| webhook, final status to receiver, at the peak (${WEBHOOK_WALLETS} wallets' endpoints) | p50 ${results.webhook.peak.p50_ms} ms, p99 ${results.webhook.peak.p99_ms} ms (${results.webhook.peak.count} events, ${results.webhook.unverified} bad signatures) | p99 ≤ 1000 ms: ${target(results.webhook.peak.p99_ms <= 1000 && results.webhook.unverified === 0)} |`,
    results.webhook.batch_peak === undefined
      ? ""
      : `| webhook, final status to receiver, at the batch peak | p50 ${results.webhook.batch_peak.p50_ms} ms, p99 ${results.webhook.batch_peak.p99_ms} ms (${results.webhook.batch_peak.count} events) | p99 ≤ 1000 ms: ${target(results.webhook.batch_peak.p99_ms <= 1000 && results.webhook.unverified === 0)} |`,
    `| audit after the run | ${results.audit.ok ? "OK" : "VIOLATIONS"} | OK |`,
    `| baseline's money conserved | ${results.baseline_money_conserved ? "yes" : "NO"} | yes |`,
    "",
  ];
}

/** The sections after the summary: tables, charts, latency, batches, reads, CPU, audit, profiles. */
function reportBody(results: Results, figures: ReportFigures, profile_sections: string[]): string[] {
  const { peak, small, cases, half } = figures;
  const mode = modes[results.mode];
  return [
    "## Throughput against concurrency",
    "",
    "![throughput](throughput.png)",
    "",
    ...CASE_HEADER,
    ...results.sweep.map(caseRow),
    "",
    ...caseErrorKinds(results.sweep),
    "![latency](latency.png)",
    "",
    "## Workloads: more wallets, a hot wallet",
    "",
    "![workloads](workloads.png)",
    "",
    ...CASE_HEADER,
    ...cases.map(caseRow),
    "",
    ...caseErrorKinds(cases),
    ...waitingSection(small, results.waiting),
    "## Latency at half the peak rate (open loop)",
    "",
    `${results.half_rate.rate_tps} transfers per second offered for ${fmt(half.duration_s, 1)} s, latency counted from the intended send time.`,
    "",
    "| | p50 | p95 | p99 | max |",
    "|---|--:|--:|--:|--:|",
    `| POST /transactions/transfer (ms) | ${half.post.p50_ms} | ${half.post.p95_ms} | ${half.post.p99_ms} | ${half.post.max_ms} |`,
    `| to COMPLETED through the API (ms) | ${half.completion.p50_ms} | ${half.completion.p95_ms} | ${half.completion.p99_ms} | ${half.completion.max_ms} |`,
    `| GET while polling (ms) | ${half.poll_get.p50_ms} | ${half.poll_get.p95_ms} | ${half.poll_get.p99_ms} | ${half.poll_get.max_ms} |`,
    "",
    `Completed ${half.completed}, refused ${half.failed}, ${errorsSaid(half.errors, half.error_kinds)}, not final in time ${half.unfinished}, dropped (more than ${mode.concurrency.at(-1)} × 8 in flight) ${half.dropped}.`,
    "",
    ...(results.batches === undefined
      ? []
      : [
          "## Batches",
          "",
          `Disbursements of 1,000 items, 2 in flight, each read until final: ${results.batches.batches_final} of ${results.batches.batches_sent} final, ${fmt(results.batches.items_completed)} items completed, ${results.batches.items_failed} failed, ${errorsSaid(results.batches.errors, results.batches.error_kinds)}; POST to final p50 ${results.batches.batch_p50_ms} ms, p99 ${results.batches.batch_p99_ms} ms.`,
          "",
        ]),
    "## Cached reads",
    "",
    `GET /transactions/:id of final transfers by 8 readers (after a warm-up as long as each case's): ${results.cached_get.reads} reads, p50 ${results.cached_get.get.p50_ms} ms, p95 ${results.cached_get.get.p95_ms} ms, p99 ${results.cached_get.get.p99_ms} ms, ${errorsSaid(results.cached_get.errors, results.cached_get.error_kinds)}.`,
    "",
    `## CPU by process at the peak (${peak.concurrency} clients, ${fmt(small.wallets)} wallets)`,
    "",
    ...cpuTable(small),
    "",
    "## Audit after the run",
    "",
    "```",
    results.audit.summary,
    "```",
    "",
    ...(profile_sections.length > 0 ? ["## CPU profiles of the services", "", ...profile_sections] : []),
    "## Reproduce",
    "",
    `\`npm run bench${results.mode === "full" ? "" : ` -- --${results.mode}`}${results.profiled ? " --profile" : ""}${results.tracing ? " --tracing" : ""}\` (see the README's Benchmark section).`,
    "",
  ];
}

/** The RESULT line's figures. */
function resultFigures(results: Results, figures: ReportFigures) {
  const { peak, baseline_peak, small, ratio, hot_vs_uniform, large_vs_small, half } = figures;
  return {
    mode: results.mode,
    throughput_tps: peak.ours.throughput_tps,
    baseline_tps: baseline_peak.baseline.throughput_tps,
    ratio: Math.round(ratio * 1000) / 1000,
    post_p99_ms: half.post.p99_ms,
    peak_concurrency: peak.concurrency,
    completion_p99_ms: peak.ours.completion.p99_ms,
    cached_get_p99_ms: results.cached_get.get.p99_ms,
    hot_over_uniform: Math.round(hot_vs_uniform * 1000) / 1000,
    large_over_small: large_vs_small === null ? null : Math.round(large_vs_small * 1000) / 1000,
    large_over_peak: figures.large_vs_peak === null ? null : Math.round(figures.large_vs_peak * 1000) / 1000,
    webhook_p50_ms: results.webhook.peak.p50_ms,
    webhook_p99_ms: results.webhook.peak.p99_ms,
    webhook_batch_p50_ms: results.webhook.batch_peak?.p50_ms ?? null,
    webhook_batch_p99_ms: results.webhook.batch_peak?.p99_ms ?? null,
    audit_ok: results.audit.ok,
    tracing: results.tracing === true,
    ...cpuPerTransfer_ms({
      tps: small.ours.throughput_tps,
      machine_cores: small.machine_cores_ours,
      processes_cpu_s: small.cpu_ours_s,
      window_s: small.cpu_window_ours_s,
    }),
    throughput_waiting_tps: results.waiting?.ours.throughput_tps ?? null,
    cpu_ms_per_transfer_waiting:
      results.waiting === undefined
        ? null
        : cpuPerTransfer_ms({
            tps: results.waiting.ours.throughput_tps,
            machine_cores: results.waiting.machine_cores_ours,
            processes_cpu_s: results.waiting.cpu_ours_s,
            window_s: results.waiting.cpu_window_ours_s,
          }).cpu_ms_per_transfer,
    batch_tps: results.batches?.batch_tps ?? null,
    batch_ratio:
      results.batches === undefined
        ? null
        : Math.round((results.batches.batch_tps / baseline_peak.baseline.throughput_tps) * 1000) / 1000,
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      smoke: { type: "boolean", default: false },
      quick: { type: "boolean", default: false },
      long: { type: "boolean", default: false },
      profile: { type: "boolean", default: false },
      tracing: { type: "boolean", default: false },
      out: { type: "string" },
      phase: { type: "string", default: "run" },
      count: { type: "string" },
      batches: { type: "string" },
      rate: { type: "string" },
      cluster: { type: "boolean", default: false },
      /** With --cluster: the stack this run drives, "single" or "cluster" (its own subfolder). */
      stack: { type: "string" },
    },
  });
  const counted = values.count === undefined ? null : Number(values.count);
  if (counted !== null && !(Number.isInteger(counted) && counted >= 1 && counted <= 1_000_000)) {
    throw new Error("--count takes a whole number of transfers, 1 to 1,000,000");
  }
  const batches_counted = values.batches === undefined ? null : Number(values.batches);
  if (
    batches_counted !== null &&
    !(Number.isInteger(batches_counted) && batches_counted >= 1 && batches_counted <= 1_000)
  ) {
    throw new Error("--batches takes a whole number of batches of 1,000 items, 1 to 1,000");
  }
  const rate = values.rate === undefined ? null : Number(values.rate);
  if (rate !== null && !(Number.isInteger(rate) && rate >= 1 && rate <= 100_000)) {
    throw new Error("--rate takes a whole number of transfers per second, 1 to 100,000");
  }
  const mode = modes[values.smoke ? "smoke" : values.quick ? "quick" : values.long ? "long" : "full"];
  const suffix = `${values.profile ? "-profile" : ""}${values.tracing ? "-tracing" : ""}${values.cluster ? "-cluster" : ""}`;
  const base_dir = resolve(
    repoRoot,
    values.out ??
      (mode.name === "full" && suffix === "" ? "docs/benchmark" : `.data/bench/${mode.name}${suffix}`),
  );
  const out_dir = values.stack === undefined ? base_dir : join(base_dir, values.stack);
  if ([counted, batches_counted, rate].filter((n) => n !== null).length > 1) {
    throw new Error("--count, --batches and --rate are runs of their own: give one of them");
  }
  const run: CountedRun | RateRun | null =
    counted !== null
      ? { kind: "transfers", count: counted }
      : batches_counted !== null
        ? { kind: "batches", count: batches_counted }
        : rate !== null
          ? { kind: "rate", rate_tps: rate }
          : null;
  if (values.phase === "run") await runPhase(mode, out_dir, values.profile, values.tracing, run);
  // A counted or rate run has printed its figures: nothing to report.
  else if (values.phase === "report") {
    if (run === null) await reportPhase(out_dir);
  } else if (values.phase === "compare") await compareStacks(base_dir);
  else throw new Error(`unknown phase ${values.phase}`);
}

await main();
