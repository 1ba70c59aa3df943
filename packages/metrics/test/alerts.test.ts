// The alert rules and the Prometheus configuration, checked by the real promtool (Debian's
// prometheus package, installed on first use), and held to the metric catalogue.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { before, describe, it } from "node:test";
import { withTimeout } from "#packages/runtime/index.ts";
import { repoRoot } from "../../../scripts/stack/paths.ts";
import { run } from "../../../scripts/stack/proc.ts";
import { ensurePrometheus, type PrometheusTools } from "../../../scripts/tools/prometheus.ts";
import { exposedMetricNames, known, metricsIn } from "./promql.ts";

const dir = join(repoRoot, "deploy", "prometheus");
/** An apt install on a busy machine can wait minutes for the lock. */
const INSTALL_TIMEOUT_MS = 15 * 60_000;
const PROMTOOL_TIMEOUT_MS = 60_000;

async function promtool(tools: PrometheusTools, ...args: string[]): Promise<string> {
  const result = await withTimeout(
    run(tools.promtool, args, { cwd: dir, allowFailure: true }),
    PROMTOOL_TIMEOUT_MS,
    `promtool ${args[0]}`,
  );
  assert.equal(result.code, 0, `promtool ${args.join(" ")}:\n${result.output}`);
  return result.output;
}

describe("Prometheus alert rules and configuration", () => {
  let tools: PrometheusTools;
  before(async () => {
    tools = await withTimeout(ensurePrometheus(), INSTALL_TIMEOUT_MS, "installing prometheus");
  });

  it("are valid rules: promtool check rules", async () => {
    const output = await promtool(tools, "check", "rules", "alerts.yml");
    assert.match(output, /SUCCESS: 8 rules found/);
  });

  it("is a valid configuration that loads the rules: promtool check config", async () => {
    const output = await promtool(tools, "check", "config", "prometheus.yml");
    assert.match(output, /SUCCESS: 1 rule files found/);
  });

  it("fire on the series they must and not on the others: promtool test rules", async () => {
    const output = await promtool(tools, "test", "rules", "alerts.test.yml");
    assert.match(output, /SUCCESS/);
  });

  it("test every alert, each with a runbook line", () => {
    const rules = readFileSync(join(dir, "alerts.yml"), "utf8");
    const tests = readFileSync(join(dir, "alerts.test.yml"), "utf8");
    const alerts = [...rules.matchAll(/^\s*- alert: (\w+)$/gm)].map((m) => m[1] as string);
    assert.deepEqual(alerts.sort(), [
      "ClearingNotDraining",
      "ConsumerLagGrowing",
      "DeadLettersGrowing",
      "OutboxStale",
      "PublicApiErrorRate",
      "ServiceDown",
      "TransferParked",
      "TransferPastDeadline",
    ]);
    for (const alert of alerts) {
      assert.match(tests, new RegExp(`alertname: ${alert}\\n\\s+exp_alerts:\\n\\s+- exp_labels`), alert);
      assert.match(tests, new RegExp(`alertname: ${alert}\\n\\s+exp_alerts: \\[\\]`), alert);
    }
    assert.equal(rules.match(/^\s+runbook: /gm)?.length, alerts.length);
  });

  it("name only metrics the services expose", async () => {
    const rules = readFileSync(join(dir, "alerts.yml"), "utf8");
    const exprs = [...rules.matchAll(/expr: (>-\n(?:\s{10}.*\n)+|.*)/g)].map((m) => m[1] as string);
    assert.equal(exprs.length, 8);
    const used = metricsIn(exprs.join("\n"));
    assert.ok(used.length >= 8, used.join(", "));
    const exposed = await exposedMetricNames();
    assert.deepEqual(
      used.filter((name) => !known(name, exposed)),
      [],
    );
  });
});
