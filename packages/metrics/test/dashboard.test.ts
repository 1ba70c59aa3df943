// The Grafana dashboard: a Prometheus datasource variable, and PromQL that names only metrics the
// services expose, covering every metric of the catalogue.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { withTimeout } from "#packages/runtime/index.ts";
import { repoRoot } from "../../../scripts/stack/paths.ts";
import { run } from "../../../scripts/stack/proc.ts";
import { ensurePrometheus } from "../../../scripts/tools/prometheus.ts";
import { metricNames } from "../index.ts";
import { exposedMetricNames, known, metricsIn } from "./promql.ts";

interface Target {
  expr: string;
  datasource?: { type?: string; uid?: string };
}

interface Panel {
  id: number;
  type: string;
  title: string;
  datasource?: { type?: string; uid?: string };
  targets?: Target[];
  panels?: Panel[];
}

interface Dashboard {
  schemaVersion: number;
  uid: string;
  templating: { list: Array<{ type: string; name: string; query: unknown }> };
  panels: Panel[];
}

const dashboard = JSON.parse(
  readFileSync(join(repoRoot, "deploy", "grafana", "dashboard.json"), "utf8"),
) as Dashboard;

/** Every panel, rows' nested panels included. */
function allPanels(panels: Panel[]): Panel[] {
  return panels.flatMap((panel) => [panel, ...allPanels(panel.panels ?? [])]);
}

/** Grafana's reference to the datasource variable (a plain string, not a template literal). */
const DATASOURCE_VARIABLE = ["$", "{datasource}"].join("");

/** What Grafana puts in place of its variables before it sends a query. */
function substituteVariables(expr: string): string {
  return expr.replaceAll("$__rate_interval", "1m").replaceAll("$job", ".*");
}

const graphs = allPanels(dashboard.panels).filter((panel) => panel.type !== "row");

describe("the Grafana dashboard", () => {
  it("is a current dashboard with a Prometheus datasource variable that every panel and query uses", () => {
    assert.ok(
      dashboard.schemaVersion >= 36 && dashboard.schemaVersion <= 41,
      String(dashboard.schemaVersion),
    );
    assert.equal(typeof dashboard.uid, "string");
    const variable = dashboard.templating.list.find((v) => v.type === "datasource");
    assert.deepEqual(
      { name: variable?.name, query: variable?.query },
      { name: "datasource", query: "prometheus" },
    );
    const ids = allPanels(dashboard.panels).map((panel) => panel.id);
    assert.equal(new Set(ids).size, ids.length, "panel ids are unique");
    assert.ok(graphs.length >= 20, `${graphs.length} panels`);
    for (const panel of graphs) {
      assert.deepEqual(panel.datasource, { type: "prometheus", uid: DATASOURCE_VARIABLE }, panel.title);
      assert.ok((panel.targets ?? []).length > 0, `${panel.title} has a query`);
      for (const target of panel.targets ?? [])
        assert.equal(target.datasource?.uid, DATASOURCE_VARIABLE, panel.title);
    }
  });

  it("queries only metrics the services expose, and shows every metric of the catalogue", async () => {
    const exposed = await exposedMetricNames();
    const used = new Set<string>();
    for (const panel of graphs) {
      for (const target of panel.targets ?? []) {
        const names = metricsIn(target.expr);
        assert.ok(names.length > 0, `${panel.title}: ${target.expr} names a metric`);
        const unknown = names.filter((name) => !known(name, exposed));
        assert.deepEqual(unknown, [], `${panel.title}: ${target.expr}`);
        for (const name of names) used.add(name.replace(/_(bucket|sum|count)$/, ""));
      }
    }
    const missing = metricNames.filter((name) => !used.has(name));
    assert.deepEqual(missing, [], "every catalogue metric has a panel");
  });

  it("queries valid PromQL: promtool parses every query as a recording rule", {
    timeout: 15 * 60_000,
  }, async () => {
    const tools = await ensurePrometheus();
    const exprs = graphs.flatMap((panel) =>
      (panel.targets ?? []).map((target) => substituteVariables(target.expr)),
    );
    const rules = exprs.map(
      (expr, i) => `      - record: dashboard:query_${i}\n        expr: ${JSON.stringify(expr)}`,
    );
    const dir = mkdtempSync(join(tmpdir(), "dps-dashboard-"));
    try {
      const file = join(dir, "queries.yml");
      writeFileSync(file, `groups:\n  - name: dashboard\n    rules:\n${rules.join("\n")}\n`);
      const result = await withTimeout(
        run(tools.promtool, ["check", "rules", file], { allowFailure: true }),
        60_000,
        "promtool check rules",
      );
      assert.equal(result.code, 0, result.output);
      assert.match(result.output, new RegExp(`SUCCESS: ${exprs.length} rules found`));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
