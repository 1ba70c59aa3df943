// A real Prometheus scrapes a service's /metrics and loads the alert rules: what a service records
// is what an operator can query.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { createHttpServer, type HttpServer } from "#packages/http/server.ts";
import { createLogger } from "#packages/log/index.ts";
import { envPort, logsDir, repoRoot } from "../../../scripts/stack/paths.ts";
import { waitUntil } from "../../../scripts/stack/proc.ts";
import { type PrometheusServer, startPrometheus } from "../../../scripts/tools/prometheus.ts";
import { createMetrics, instrumentHttp, serveMetrics } from "../index.ts";

/** Beside the test stack's ports (base + 0..3), apart from the other checkouts' ranges. */
const PROMETHEUS_PORT = envPort("DPS_TEST_PORT_BASE", 18000) + 90;
/** Scrapes every second; a few scrapes on a loaded machine. */
const SEEN_TIMEOUT_MS = 60_000;

describe("a real Prometheus", { timeout: 15 * 60_000 }, () => {
  let app: HttpServer;
  let prometheus: PrometheusServer | undefined;
  let dir: string;

  before(async () => {
    const metrics = createMetrics();
    metrics.collectClearing(async () => ({ held_minor: 2_500n, holds_open: 1, oldest_hold_age_seconds: 3 }));
    app = createHttpServer({ logger: createLogger("prometheus-test", "silent") });
    instrumentHttp(app, metrics, "public");
    serveMetrics(app, metrics);
    app.get("/things/:id", async () => ({ ok: true }));
    await app.listen({ host: "127.0.0.1", port: 0 });
    const target = `127.0.0.1:${(app.server.address() as AddressInfo).port}`;
    dir = mkdtempSync(join(tmpdir(), "dps-prometheus-"));
    const config = join(dir, "prometheus.yml");
    writeFileSync(
      config,
      [
        "global: { scrape_interval: 1s, evaluation_interval: 1s }",
        `rule_files: [${JSON.stringify(join(repoRoot, "deploy", "prometheus", "alerts.yml"))}]`,
        "scrape_configs:",
        `  - { job_name: metrics-test, static_configs: [{ targets: [${JSON.stringify(target)}] }] }`,
        "",
      ].join("\n"),
    );
    prometheus = await startPrometheus({
      config_file: config,
      port: PROMETHEUS_PORT,
      data_dir: join(dir, "data"),
      log_file: join(logsDir, "test-prometheus.log"),
    });
  });

  after(async () => {
    await prometheus?.stop();
    await app?.close();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  /** Poll until the query's single value satisfies `ok` (Prometheus sees a scrape later). */
  async function eventually(promql: string, ok: (value: number) => boolean): Promise<number | undefined> {
    let last: number | undefined;
    await waitUntil(async () => {
      const result = (await prometheus?.query(promql)) ?? [];
      last = result[0]?.value;
      return last !== undefined && ok(last);
    }, SEEN_TIMEOUT_MS);
    return last;
  }

  it("scrapes /metrics: requests show in the counter and the histogram, a collector's gauge too", async () => {
    for (const id of [1, 2, 3]) assert.equal((await app.inject({ url: `/things/${id}` })).statusCode, 200);
    assert.equal(await eventually('up{job="metrics-test"}', (v) => v === 1), 1);
    const route = 'route="/things/:id"';
    assert.equal(await eventually(`sum(dps_http_requests_total{${route}, status="200"})`, (v) => v === 3), 3);
    assert.equal(
      await eventually(
        `sum(dps_http_request_duration_seconds_count{${route}, status_class="2xx"})`,
        (v) => v === 3,
      ),
      3,
    );
    const p99 = `histogram_quantile(0.99, sum by (le) (dps_http_request_duration_seconds_bucket{${route}}))`;
    assert.ok(((await eventually(p99, (v) => v > 0)) ?? 0) > 0, "a latency quantile");
    assert.equal(await eventually("dps_clearing_held_minor", (v) => v === 2500), 2500);
  });

  it("loads the eight alert rules, all healthy", async () => {
    const data = await prometheus?.api<{ groups: Array<{ rules: Array<{ type: string; health: string }> }> }>(
      "rules",
    );
    const rules = (data?.groups ?? []).flatMap((group) => group.rules);
    assert.equal(rules.filter((rule) => rule.type === "alerting").length, 8);
    await waitUntil(async () => {
      const again = await prometheus?.api<{ groups: Array<{ rules: Array<{ health: string }> }> }>("rules");
      return (again?.groups ?? []).flatMap((g) => g.rules).every((rule) => rule.health === "ok");
    }, SEEN_TIMEOUT_MS);
    const final = await prometheus?.api<{
      groups: Array<{ rules: Array<{ name: string; health: string }> }>;
    }>("rules");
    const unhealthy = (final?.groups ?? []).flatMap((g) => g.rules).filter((rule) => rule.health !== "ok");
    assert.deepEqual(unhealthy, []);
  });
});
