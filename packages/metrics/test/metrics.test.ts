import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createHttpServer } from "#packages/http/server.ts";
import { createLogger } from "#packages/log/index.ts";
import { catalogue, createMetrics, instrumentHttp, type Metrics, serveMetrics } from "../index.ts";

/** The value of the sample `name{labels}` in a text exposition (labels in any order), if present. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split("\n")) {
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (match === null || match[1] !== name) continue;
    const have = Object.fromEntries(
      [...(match[2] ?? "").matchAll(/([a-zA-Z_]+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]]),
    );
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(match[3]);
  }
  return undefined;
}

/** Every sample line of `name`, for checks on label values. */
function samples(text: string, name: string): string[] {
  return text.split("\n").filter((line) => line.startsWith(`${name}{`) || line.startsWith(`${name} `));
}

function quiet(): Metrics {
  return createMetrics({ default_metrics: false });
}

describe("metrics: the catalogue and the registry", () => {
  it("gives each process its own registry with every metric of the catalogue and the process metrics", async () => {
    const one = createMetrics();
    const two = createMetrics();
    one.cacheLookup("transaction", true);
    const text = await one.exposition();
    for (const spec of Object.values(catalogue)) {
      assert.match(text, new RegExp(`^# HELP ${spec.name} \\S`, "m"), spec.name);
      assert.match(text, new RegExp(`^# TYPE ${spec.name} ${spec.type}$`, "m"), spec.name);
    }
    assert.ok(sample(text, "process_cpu_user_seconds_total") !== undefined, "process metrics");
    assert.ok(sample(text, "nodejs_eventloop_lag_seconds") !== undefined, "event loop lag");
    assert.equal(sample(text, "dps_cache_lookups_total", { cache: "transaction", result: "hit" }), 1);
    const other = await two.exposition();
    assert.equal(sample(other, "dps_cache_lookups_total", { result: "hit" }), undefined, "registries apart");
  });

  it("names every metric dps_* with its unit or _total last, and no metric twice", () => {
    const names = Object.values(catalogue).map((spec) => spec.name);
    assert.equal(new Set(names).size, names.length);
    for (const spec of Object.values(catalogue)) {
      assert.match(spec.name, /^dps_[a-z_]+$/);
      if (spec.type === "counter") assert.match(spec.name, /_total$/, spec.name);
      assert.ok(!spec.label_names.some((label) => /(^|_)id$/.test(label)), `${spec.name}: no id labels`);
    }
  });
});

describe("metrics: HTTP", () => {
  function app(metrics: Metrics) {
    const server = createHttpServer({ logger: createLogger("metrics-test", "silent") });
    instrumentHttp(server, metrics, "public");
    serveMetrics(server, metrics);
    server.get("/things/:id", async () => ({ ok: true }));
    server.get("/bug", async () => {
      throw new Error("a bug");
    });
    return server;
  }

  it("counts requests by route template and status, times them by status class, and serves /metrics", async () => {
    const metrics = quiet();
    const server = app(metrics);
    for (const url of ["/things/42", "/things/43", "/nowhere/44", "/bug"]) await server.inject({ url });
    const scrape = await server.inject({ url: "/metrics" });
    assert.equal(scrape.statusCode, 200);
    assert.match(String(scrape.headers["content-type"]), /^text\/plain; version=0\.0\.4/);
    const text = scrape.body;
    const req = (route: string, status: string) =>
      sample(text, "dps_http_requests_total", { listener: "public", method: "GET", route, status });
    assert.equal(req("/things/:id", "200"), 2);
    assert.equal(req("unmatched", "404"), 1);
    assert.equal(req("/bug", "500"), 1);
    const count = (route: string, status_class: string) =>
      sample(text, "dps_http_request_duration_seconds_count", { route, status_class });
    assert.equal(count("/things/:id", "2xx"), 2);
    assert.equal(count("/bug", "5xx"), 1);
    assert.ok((sample(text, "dps_http_request_duration_seconds_sum", { route: "/things/:id" }) ?? -1) >= 0);
    const lines = samples(text, "dps_http_requests_total").join("\n");
    assert.doesNotMatch(lines, /42|43|44|nowhere/, "no URL or id in a label");
    await server.close();
  });
});

describe("metrics: recorders", () => {
  it("records saga transitions and the time from created to final by outcome", async () => {
    const metrics = quiet();
    metrics.transferEntered("created");
    metrics.transferEntered("created");
    metrics.transferEntered("held");
    const now_ms = Date.parse("2026-01-01T00:00:10Z");
    metrics.transferFinished("completed", "2026-01-01T00:00:08.500Z", now_ms);
    metrics.transferFinished("failed", new Date("2026-01-01T00:00:00Z"), now_ms);
    metrics.transferFinished("failed", "not a timestamp", now_ms);
    const text = await metrics.exposition();
    assert.equal(sample(text, "dps_transfer_transitions_total", { state: "created" }), 2);
    assert.equal(sample(text, "dps_transfer_transitions_total", { state: "held" }), 1);
    const bucket = (outcome: string, le: string) =>
      sample(text, "dps_transfer_duration_seconds_bucket", { outcome, le });
    assert.equal(bucket("completed", "1"), 0);
    assert.equal(bucket("completed", "2.5"), 1);
    assert.equal(sample(text, "dps_transfer_duration_seconds_sum", { outcome: "completed" }), 1.5);
    assert.equal(bucket("failed", "5"), 0);
    assert.equal(bucket("failed", "10"), 1);
    assert.equal(sample(text, "dps_transfer_duration_seconds_sum", { outcome: "failed" }), 10, "no NaN");
  });

  it("records Kafka handling, dead letters, ledger commits, record writes, cache, refusals and webhooks", async () => {
    const metrics = quiet();
    metrics.messageHandled("record-writer", "transfer.commands", "ok");
    metrics.messageHandled("record-writer", "transfer.commands", "dead_lettered");
    metrics.deadLettered("transfer.commands");
    metrics.ledgerCommitted(12, 4, "ok");
    metrics.ledgerCommitted(3, 30, "error");
    metrics.recordWrite("written");
    metrics.recordWrite("unchanged");
    metrics.cacheLookup("transaction", false);
    metrics.rateLimitRefused("/transactions/transfer", "per_client");
    metrics.webhookDelivery("delivered");
    const text = await metrics.exposition();
    const topic = "transfer.commands";
    assert.equal(sample(text, "dps_kafka_messages_handled_total", { topic, result: "ok" }), 1);
    assert.equal(sample(text, "dps_kafka_messages_handled_total", { topic, result: "dead_lettered" }), 1);
    assert.equal(sample(text, "dps_dead_letters_total", { topic }), 1);
    assert.equal(sample(text, "dps_ledger_batch_size_bucket", { le: "8" }), 0, "12 steps");
    assert.equal(sample(text, "dps_ledger_batch_size_bucket", { le: "16" }), 1);
    assert.equal(sample(text, "dps_ledger_batch_size_count"), 1, "a failed commit committed no batch");
    assert.equal(sample(text, "dps_ledger_commit_duration_seconds_sum", { result: "ok" }), 0.004);
    assert.equal(sample(text, "dps_ledger_commit_duration_seconds_count", { result: "error" }), 1);
    assert.equal(sample(text, "dps_record_writes_total", { result: "written" }), 1);
    assert.equal(sample(text, "dps_record_writes_total", { result: "unchanged" }), 1);
    assert.equal(sample(text, "dps_cache_lookups_total", { cache: "transaction", result: "miss" }), 1);
    const refusal = { route: "/transactions/transfer", limit: "per_client" };
    assert.equal(sample(text, "dps_rate_limit_refusals_total", refusal), 1);
    assert.equal(sample(text, "dps_webhook_deliveries_total", { result: "delivered" }), 1);
  });

  it("shows declared dead-letter topics at 0 before their first dead letter", async () => {
    const metrics = quiet();
    metrics.declareDeadLetterTopics(["transfer.commands", "transfer.events"]);
    metrics.deadLettered("transfer.events");
    const text = await metrics.exposition();
    assert.equal(sample(text, "dps_dead_letters_total", { topic: "transfer.commands" }), 0);
    assert.equal(sample(text, "dps_dead_letters_total", { topic: "transfer.events" }), 1);
  });

  it("keeps at most label_values_max values per label and counts the rest as other", async () => {
    const metrics = createMetrics({ default_metrics: false, label_values_max: 3 });
    for (const result of ["a", "b", "c", "d", "e", "a"]) metrics.recordWrite(result);
    const text = await metrics.exposition();
    const values = samples(text, "dps_record_writes_total").map((line) => /result="([^"]*)"/.exec(line)?.[1]);
    assert.deepEqual(values.sort(), ["a", "b", "c", "other"]);
    assert.equal(sample(text, "dps_record_writes_total", { result: "a" }), 2);
    assert.equal(sample(text, "dps_record_writes_total", { result: "other" }), 2);
  });
});

describe("metrics: scrape-time collectors", () => {
  it("reads in-flight transfers, outboxes, consumer lag, open dead letters and clearing at each scrape", async () => {
    const metrics = quiet();
    let states = [
      { state: "held", count: 3, oldest_age_seconds: 12.5, overdue: 1 },
      { state: "posted", count: 1, oldest_age_seconds: 0.2, overdue: 0 },
    ];
    metrics.collectTransfersInFlight(async () => states);
    metrics.collectOutbox(async () => [{ outbox: "saga", depth: 7, oldest_age_seconds: 1.25 }]);
    metrics.collectConsumerLag(async () => [
      { group: "record-writer", topic: "transfer.commands", partition: 0, lag: 5 },
      { group: "record-writer", topic: "transfer.commands", partition: 1, lag: 0 },
    ]);
    metrics.collectDeadLetters(async () => [
      { topic: "transfer.commands", open: 2, replayed: 4 },
      { topic: "transfer.events", open: 0, replayed: 0 },
    ]);
    metrics.collectClearing(async () => ({ held_minor: 12345n, holds_open: 3, oldest_hold_age_seconds: 9 }));
    let text = await metrics.exposition();
    assert.equal(sample(text, "dps_transfers_in_flight", { state: "held" }), 3);
    assert.equal(sample(text, "dps_transfer_oldest_age_seconds", { state: "held" }), 12.5);
    assert.equal(sample(text, "dps_transfers_overdue", { state: "held" }), 1);
    assert.equal(sample(text, "dps_transfers_in_flight", { state: "posted" }), 1);
    assert.equal(sample(text, "dps_outbox_depth", { outbox: "saga" }), 7);
    assert.equal(sample(text, "dps_outbox_oldest_age_seconds", { outbox: "saga" }), 1.25);
    assert.equal(sample(text, "dps_kafka_consumer_lag_messages", { partition: "0" }), 5);
    assert.equal(sample(text, "dps_kafka_consumer_lag_messages", { partition: "1" }), 0);
    assert.equal(sample(text, "dps_dead_letters_open", { topic: "transfer.commands" }), 2);
    assert.equal(sample(text, "dps_dead_letters_replayed", { topic: "transfer.commands" }), 4);
    assert.equal(sample(text, "dps_dead_letters_open", { topic: "transfer.events" }), 0);
    assert.equal(sample(text, "dps_clearing_held_minor"), 12345);
    assert.equal(sample(text, "dps_clearing_holds_open"), 3);
    assert.equal(sample(text, "dps_clearing_oldest_hold_age_seconds"), 9);

    states = [{ state: "posted", count: 2, oldest_age_seconds: 0.5, overdue: 0 }];
    text = await metrics.exposition();
    assert.equal(
      sample(text, "dps_transfers_in_flight", { state: "held" }),
      undefined,
      "a drained state goes",
    );
    assert.equal(sample(text, "dps_transfers_in_flight", { state: "posted" }), 2);
  });

  it("leaves a failed or slow collector's gauges out of the scrape, counts it, and still answers", async () => {
    const failures: string[] = [];
    const metrics = createMetrics({
      default_metrics: false,
      collect_timeout_ms: 200,
      on_collect_error: (collector, error) => failures.push(`${collector}: ${(error as Error).message}`),
    });
    let fail = false;
    metrics.collectOutbox(async () => {
      if (fail) throw new Error("connection refused");
      return [{ outbox: "saga", depth: 1, oldest_age_seconds: 0 }];
    });
    metrics.collectClearing(() => new Promise(() => {}));
    const started = Date.now();
    let text = await metrics.exposition();
    assert.ok(Date.now() - started < 5_000, "a stuck query is bounded by collect_timeout_ms");
    assert.equal(sample(text, "dps_outbox_depth", { outbox: "saga" }), 1);
    assert.equal(sample(text, "dps_clearing_held_minor"), undefined);
    assert.equal(sample(text, "dps_metrics_collect_errors_total", { collector: "clearing" }), 1);
    fail = true;
    text = await metrics.exposition();
    assert.equal(sample(text, "dps_outbox_depth", { outbox: "saga" }), undefined, "no stale figure");
    assert.equal(sample(text, "dps_metrics_collect_errors_total", { collector: "outbox" }), 1);
    assert.deepEqual(failures.sort(), [
      "clearing: metrics collector clearing timed out after 200 ms",
      "clearing: metrics collector clearing timed out after 200 ms",
      "outbox: connection refused",
    ]);
  });
});
