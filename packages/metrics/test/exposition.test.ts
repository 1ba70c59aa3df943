// The exposition as Prometheus reads it: promtool's linter checks the text format and the naming
// conventions (counters end in _total, units in base units and last, help on every metric).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { describe, it } from "node:test";
import { ensurePrometheus } from "../../../scripts/tools/prometheus.ts";
import { createMetrics, type Metrics } from "../index.ts";

/** One sample of every metric of the catalogue. */
function recordEverything(metrics: Metrics): void {
  metrics.httpRequest("public", "GET", "/transactions/:id", 200, 12);
  metrics.transferEntered("created");
  metrics.transferFinished("completed", new Date(Date.now() - 300));
  metrics.messageHandled("record-writer", "transfer.commands", "ok");
  metrics.deadLettered("transfer.commands");
  metrics.ledgerCommitted(3, 2, "ok");
  metrics.recordWrite("written");
  metrics.cacheLookup("transaction", true);
  metrics.rateLimitRefused("/transactions/transfer", "per_client");
  metrics.webhookDelivery("delivered");
  metrics.collectTransfersInFlight(async () => [
    { state: "held", count: 1, oldest_age_seconds: 1, overdue: 0 },
  ]);
  metrics.collectOutbox(async () => [{ outbox: "saga", depth: 1, oldest_age_seconds: 1 }]);
  metrics.collectConsumerLag(async () => [{ group: "saga", topic: "transfer.events", partition: 0, lag: 1 }]);
  metrics.collectDeadLetters(async () => [{ topic: "transfer.commands", open: 1, replayed: 1 }]);
  metrics.collectClearing(async () => ({ held_minor: 5n, holds_open: 1, oldest_hold_age_seconds: 1 }));
  metrics.collectOutbox(async () => {
    throw new Error("down");
  });
}

describe("the metrics exposition", () => {
  it("passes promtool check metrics", { timeout: 15 * 60_000 }, async () => {
    const tools = await ensurePrometheus();
    // prom-client's own Node.js gauges named *_total (nodejs_active_handles_total) would fail the
    // linter; they are the library's, not ours.
    const metrics = createMetrics({ default_metrics: false });
    recordEverything(metrics);
    const text = await metrics.exposition();
    assert.match(text, /^dps_metrics_collect_errors_total\{collector="outbox"\} 1$/m);
    const lint = spawnSync(tools.promtool, ["check", "metrics"], {
      input: text,
      encoding: "utf8",
      timeout: 60_000,
    });
    assert.equal(lint.status, 0, `${lint.stdout}${lint.stderr}`);
    assert.equal(`${lint.stdout}${lint.stderr}`.trim(), "");
  });
});
