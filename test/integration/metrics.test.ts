/**
 * A real Prometheus scrapes the four running services' /metrics on their internal listeners: a
 * transfer made here shows in the counters and histograms an operator queries.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { envPort, logsDir, repoRoot } from "../../scripts/stack/paths.ts";
import { waitUntil } from "../../scripts/stack/proc.ts";
import { type PrometheusServer, startPrometheus } from "../../scripts/tools/prometheus.ts";
import { call, createUser, internalUrls, settled, transfer, uniqueName, urls } from "./api.ts";

/** Beside the test stack's ports, apart from packages/metrics' own test Prometheus (+90). */
const PROMETHEUS_PORT = envPort("DPS_TEST_PORT_BASE", 18000) + 91;
/** Scrapes every second; generous for a loaded machine. */
const SEEN_TIMEOUT_MS = 90_000;

const jobs = {
  "user-service": internalUrls.user,
  "transaction-command-service": internalUrls.command,
  "transaction-query-service": internalUrls.query,
  "transaction-service": internalUrls.transaction,
};

describe("metrics of the running services, through a real Prometheus", { timeout: 10 * 60_000 }, () => {
  let prometheus: PrometheusServer | undefined;
  let dir: string | undefined;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dps-stack-prometheus-"));
    const config = join(dir, "prometheus.yml");
    const scrapes = Object.entries(jobs).map(
      ([job, url]) =>
        `  - { job_name: ${job}, static_configs: [{ targets: [${JSON.stringify(new URL(url).host)}] }] }`,
    );
    writeFileSync(
      config,
      [
        "global: { scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s }",
        `rule_files: [${JSON.stringify(join(repoRoot, "deploy", "prometheus", "alerts.yml"))}]`,
        "scrape_configs:",
        ...scrapes,
        "",
      ].join("\n"),
    );
    prometheus = await startPrometheus({
      config_file: config,
      port: PROMETHEUS_PORT,
      data_dir: join(dir, "data"),
      log_file: join(logsDir, "test-stack-prometheus.log"),
    });
  });

  after(async () => {
    await prometheus?.stop();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  /** The query's summed value once Prometheus has it and it satisfies `ok`; fails after the timeout. */
  async function eventually(promql: string, ok: (value: number) => boolean): Promise<number> {
    let last: number | undefined;
    const seen = await waitUntil(async () => {
      const result = (await prometheus?.query(`sum(${promql})`)) ?? [];
      last = result[0]?.value;
      return last !== undefined && ok(last);
    }, SEEN_TIMEOUT_MS);
    assert.ok(seen, `${promql}: last ${last}`);
    return last as number;
  }

  it("serves /metrics on the internal listeners only", async () => {
    for (const base of Object.values(internalUrls)) {
      const answer = await fetch(`${base}/metrics`, { signal: AbortSignal.timeout(15_000) });
      assert.equal(answer.status, 200, base);
      assert.match(answer.headers.get("content-type") ?? "", /^text\/plain/);
      assert.match(await answer.text(), /^# HELP dps_http_requests_total /m);
    }
    for (const base of Object.values(urls)) {
      assert.equal((await call("GET", `${base}/metrics`)).status, 404, base);
    }
  });

  it("a transfer shows in the saga, ledger, record, Kafka and HTTP counters and histograms", async () => {
    for (const job of Object.keys(jobs)) await eventually(`up{job="${job}"}`, (v) => v === 1);
    // What the services had counted before this transfer (other tests ran on this stack).
    const series = {
      created: 'dps_transfer_transitions_total{job="transaction-service", state="created"}',
      completed: 'dps_transfer_transitions_total{job="transaction-service", state="completed"}',
      duration: 'dps_transfer_duration_seconds_count{job="transaction-service", outcome="completed"}',
      post: 'dps_http_requests_total{job="transaction-service", listener="public", route="/transactions/transfer", status="201"}',
      post_latency:
        'dps_http_request_duration_seconds_count{job="transaction-service", listener="public", route="/transactions/transfer"}',
      ledger_batches: 'dps_ledger_commit_duration_seconds_count{job="user-service", result="ok"}',
      ledger_sizes: 'dps_ledger_batch_size_count{job="user-service"}',
      written: 'dps_record_writes_total{job="transaction-command-service", result="written"}',
      commands: 'dps_kafka_messages_handled_total{job="transaction-command-service", result="ok"}',
      events: 'dps_kafka_messages_handled_total{job="transaction-service", result="ok"}',
      // settled() below reads the transfer back through the cache.
      cache: 'dps_cache_lookups_total{job="transaction-service", cache="transfer"}',
    };
    const before: Record<string, number> = {};
    for (const [name, promql] of Object.entries(series)) {
      before[name] = (await prometheus?.query(`sum(${promql})`))?.[0]?.value ?? 0;
    }

    const a = await createUser(5_000);
    const b = await createUser(0);
    const answer = await transfer(
      { source_user_id: a.id, dest_user_id: b.id, amount: 1_234 },
      uniqueName("key"),
      a.token,
    );
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    assert.equal((await settled(answer.body.data.transaction.id, a.token)).status, "COMPLETED");

    for (const [name, promql] of Object.entries(series)) {
      await eventually(promql, (v) => v > (before[name] ?? 0));
    }
    // A quantile of the transfer's end-to-end time, as the dashboard draws it.
    await eventually(
      'histogram_quantile(0.99, sum by (le) (dps_transfer_duration_seconds_bucket{outcome="completed"}))',
      (v) => v > 0,
    );
    // Scrape-time figures read from the engines: present (not left out as failed), and sane.
    await eventually('dps_outbox_depth{job="transaction-service", outbox="saga"}', (v) => v >= 0);
    await eventually(
      'dps_outbox_oldest_age_seconds{job="transaction-service", outbox="saga"}',
      (v) => v >= 0,
    );
    // In-flight figures show only the states some transfer is in at the scrape (none, once this
    // one is final); their query runs at every scrape all the same: no collector failed, below.
    await eventually('dps_clearing_oldest_hold_age_seconds{job="user-service"}', (v) => v >= 0);
    await eventually(
      'dps_dead_letters_open{job="transaction-command-service", topic="test.transfer.commands"}',
      (v) => v >= 0,
    );
    await eventually(
      'dps_dead_letters_replayed{job="transaction-command-service", topic="test.transfer.commands"}',
      (v) => v >= 0,
    );
    await eventually('dps_clearing_held_minor{job="user-service"}', (v) => v >= 0);
    await eventually('dps_clearing_holds_open{job="user-service"}', (v) => v >= 0);
    await eventually(
      'count(dps_kafka_consumer_lag_messages{job="transaction-command-service"})',
      (v) => v > 0,
    );
    await eventually('count(dps_kafka_consumer_lag_messages{job="transaction-service"})', (v) => v > 0);
    await eventually('dps_dead_letters_total{job="transaction-command-service"}', (v) => v >= 0);
    assert.equal(
      (await prometheus?.query("sum(increase(dps_metrics_collect_errors_total[1m]))"))?.[0]?.value ?? 0,
      0,
      "no collector failed",
    );
  });
});
