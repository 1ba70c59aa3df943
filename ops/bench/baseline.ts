/**
 * The baseline: the same money movement done the monolithic way, one PostgreSQL transaction per
 * transfer, driven by pgbench on the same server at the same concurrency. Per transfer: BEGIN, a
 * guarded debit (refused when the funds are not there), a credit, two journal rows, COMMIT, as
 * an application holding a connection would send them. The server's settings are the system's
 * own (fsync and synchronous_commit on), so both sides pay the same price for durability.
 */
import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createHistogram } from "node:perf_hooks";
import pg from "pg";
import { type Latency, latencyOf } from "./load.ts";

export const BASELINE_SCHEMA = `
CREATE TABLE IF NOT EXISTS wallets (
  id bigint PRIMARY KEY,
  balance_minor bigint NOT NULL CHECK (balance_minor >= 0)
);
CREATE TABLE IF NOT EXISTS journal (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  transfer_id uuid NOT NULL,
  account_id bigint NOT NULL,
  amount_minor bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS journal_by_account ON journal (account_id);
`;

/**
 * One transfer. The hot wallet (id 1) pays in hot_ppm/2 of a million transfers and is paid in as
 * many. A refused debit ends the transaction without a credit, as the application would.
 */
export const TRANSFER_SCRIPT = `
\\set r random(1, 1000000)
\\if :r <= :hot_ppm / 2
\\set src 1
\\set dst random(2, :wallets)
\\elif :r <= :hot_ppm
\\set dst 1
\\set src random(2, :wallets)
\\else
\\set src random(1, :wallets)
\\set dst random(1, :wallets - 1)
\\set dst case when :dst >= :src then :dst + 1 else :dst end
\\endif
\\set amount random(1, :amount_max)
BEGIN;
WITH debit AS (
  UPDATE wallets SET balance_minor = balance_minor - :amount WHERE id = :src AND balance_minor >= :amount RETURNING 1
) SELECT count(*) AS debited FROM debit \\gset
\\if :debited
UPDATE wallets SET balance_minor = balance_minor + :amount WHERE id = :dst;
INSERT INTO journal (transfer_id, account_id, amount_minor)
  SELECT t.id, v.account_id, v.amount_minor
  FROM (SELECT gen_random_uuid() AS id) t, (VALUES (:src, -:amount), (:dst, :amount)) v(account_id, amount_minor);
\\endif
END;
`;

/** Grows the baseline's wallets to `count` (ids 1..count), each opened with `opening_balance`. */
export async function ensureBaselineWallets(
  database_url: string,
  count: number,
  opening_balance: number,
): Promise<void> {
  const client = new pg.Client({ connectionString: database_url });
  await client.connect();
  try {
    await client.query(BASELINE_SCHEMA);
    await client.query(
      `INSERT INTO wallets (id, balance_minor) SELECT g, $2 FROM generate_series(1, $1::bigint) g
       ON CONFLICT (id) DO NOTHING`,
      [count, opening_balance],
    );
    await client.query("VACUUM ANALYZE wallets");
  } finally {
    await client.end();
  }
}

/** Total money in the baseline's wallets (conserved by every transfer). */
export async function baselineTotal(database_url: string): Promise<bigint> {
  const client = new pg.Client({ connectionString: database_url });
  await client.connect();
  try {
    const { rows } = await client.query<{ total: string }>(
      "SELECT coalesce(sum(balance_minor), 0) AS total FROM wallets",
    );
    return BigInt(rows[0]?.total ?? "0");
  } finally {
    await client.end();
  }
}

export interface BaselineResult {
  concurrency: number;
  duration_s: number;
  transfers: number;
  failed: number;
  throughput_tps: number;
  latency: Latency;
}

/** Runs pgbench for `duration_s` at `concurrency` clients; latency from its per-transaction log. */
export async function runBaseline(options: {
  pgbench: string;
  database_url: string;
  concurrency: number;
  duration_s: number;
  wallets: number;
  hot_share: number;
  amount_max_minor: number;
  timeout_ms: number;
}): Promise<BaselineResult> {
  const work = mkdtempSync(join(tmpdir(), "dps-bench-pgbench-"));
  try {
    const script = join(work, "transfer.sql");
    writeFileSync(script, TRANSFER_SCRIPT);
    const url = new URL(options.database_url);
    const args = [
      "--no-vacuum",
      `--client=${options.concurrency}`,
      `--jobs=${Math.min(options.concurrency, 2)}`,
      `--time=${options.duration_s}`,
      // A deadlock between two transfers over the same pair is retried, as an application would.
      "--max-tries=20",
      "--log",
      `--log-prefix=${join(work, "log")}`,
      `--define=wallets=${options.wallets}`,
      `--define=hot_ppm=${Math.round(options.hot_share * 1_000_000)}`,
      `--define=amount_max=${options.amount_max_minor}`,
      `--file=${script}`,
      `--host=${url.hostname}`,
      `--port=${url.port}`,
      `--username=${decodeURIComponent(url.username)}`,
      decodeURIComponent(url.pathname.slice(1)),
    ];
    const output = await run(
      options.pgbench,
      args,
      { PGPASSWORD: decodeURIComponent(url.password) },
      options.timeout_ms,
    );
    const tps = /tps = ([\d.]+) \(without initial connection time\)/.exec(output);
    const failed = /number of failed transactions: (\d+)/.exec(output);
    if (tps?.[1] === undefined) throw new Error(`pgbench printed no tps:\n${output}`);
    // Per-transaction log lines: client_id transaction_no latency_us script_no epoch_s epoch_us
    const histogram = createHistogram({ lowest: 1, highest: 600_000_000, figures: 3 });
    let transfers = 0;
    for (const file of readdirSync(work).filter((f) => f.startsWith("log"))) {
      for (const line of readFileSync(join(work, file), "utf8").split("\n")) {
        const latency_us = Number(line.split(" ")[2]);
        if (line === "" || !Number.isFinite(latency_us)) continue;
        histogram.record(Math.max(1, latency_us));
        transfers += 1;
      }
    }
    return {
      concurrency: options.concurrency,
      duration_s: options.duration_s,
      transfers,
      failed: Number(failed?.[1] ?? 0),
      throughput_tps: Math.round(Number(tps[1]) * 10) / 10,
      latency: latencyOf(histogram),
    };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

function run(cmd: string, args: string[], env: Record<string, string>, timeout_ms: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.stderr.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), timeout_ms);
    child.on("error", reject);
    child.on("exit", (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(output);
      else reject(new Error(`${cmd} exited with ${code}:\n${output}`));
    });
  });
}
