// `node scripts/tools/dashboard-png.ts --prometheus <url> [--minutes N] [--note TEXT] [--out docs/dashboard.png]`
//
// Grafana is not in Debian's repositories, so the README's picture of the dashboard is drawn here:
// the panels of deploy/grafana/dashboard.json, each target's query run as it stands (with
// $__rate_interval = 30s and every job) over the last minutes of a running Prometheus, plotted with
// Vega-Lite and rasterised by resvg (as ops/bench/charts.ts does). The picture says so in its title.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { renderAsync } from "@resvg/resvg-js";
import { parse, View } from "vega";
import { compile, type TopLevelSpec } from "vega-lite";
import { repoRoot } from "../stack/paths.ts";

interface Panel {
  type: string;
  title: string;
  targets?: Array<{ expr: string; legendFormat?: string }>;
}

/** The panels drawn: what answers the operator's questions first (README, Operate). */
const PANELS = [
  "Transfers in flight by state",
  "Saga transitions per second",
  "Created to final, p50 and p99",
  "Held in clearing",
  "Requests per second",
  "Latency p99 by route",
  "Outbox depth",
  "Consumer lag",
  "Messages handled per second",
  "Ledger batch size",
  "Ledger commit latency",
  "Record writes",
];
const COLUMNS = 3;
const STEP_S = 5;
const QUERY_TIMEOUT_MS = 10_000;

async function rangeQuery(base: string, expr: string, start_s: number, end_s: number) {
  const promql = expr.replaceAll("$__rate_interval", "30s").replaceAll('"$job"', '".*"');
  const url = `${base}/api/v1/query_range?query=${encodeURIComponent(promql)}&start=${start_s}&end=${end_s}&step=${STEP_S}`;
  const response = await fetch(url, { signal: AbortSignal.timeout(QUERY_TIMEOUT_MS) });
  const body = (await response.json()) as {
    status: string;
    error?: string;
    data: { result: Array<{ metric: Record<string, string>; values: Array<[number, string]> }> };
  };
  if (body.status !== "success") throw new Error(`${promql}: ${body.error}`);
  return body.data.result;
}

/** One series' name from its labels, as Grafana's default legend would put it. */
function seriesName(metric: Record<string, string>, target: number): string {
  const labels = Object.entries(metric).filter(([name]) => name !== "__name__");
  const text = labels.map(([name, value]) => `${name}=${value}`).join(", ");
  return `${target > 0 ? `#${target + 1} ` : ""}${text === "" ? "value" : text}`.slice(0, 60);
}

async function panelRows(base: string, panel: Panel, start_s: number, end_s: number) {
  const rows: Array<{ panel: string; series: string; t: number; v: number }> = [];
  for (const [index, target] of (panel.targets ?? []).entries()) {
    for (const result of await rangeQuery(base, target.expr, start_s, end_s)) {
      for (const [t, v] of result.values) {
        const value = Number(v);
        if (Number.isFinite(value))
          rows.push({ panel: panel.title, series: seriesName(result.metric, index), t: t * 1000, v: value });
      }
    }
  }
  return rows;
}

function chart(title: string, rows: unknown[]) {
  return {
    title,
    width: 380,
    height: 170,
    data: { values: rows },
    mark: { type: "line", interpolate: "step-after" },
    encoding: {
      x: { field: "t", type: "temporal", title: null, axis: { format: "%H:%M", tickCount: 5 } },
      y: { field: "v", type: "quantitative", title: null, axis: { format: "~s" } },
      color: {
        field: "series",
        type: "nominal",
        legend: { orient: "bottom", title: null, columns: 2, labelLimit: 180, symbolLimit: 8 },
      },
    },
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      prometheus: { type: "string" },
      minutes: { type: "string", default: "10" },
      /** What ran while the figures were taken, for the subtitle. */
      note: { type: "string", default: "the last minutes" },
      out: { type: "string", default: join(repoRoot, "docs", "dashboard.png") },
    },
  });
  if (values.prometheus === undefined) throw new Error("--prometheus <url> is required");
  const dashboard = JSON.parse(
    readFileSync(join(repoRoot, "deploy", "grafana", "dashboard.json"), "utf8"),
  ) as {
    title: string;
    panels: Panel[];
  };
  const end_s = Math.floor(Date.now() / 1000);
  const start_s = end_s - Number(values.minutes) * 60;
  const charts = [];
  for (const title of PANELS) {
    const panel = dashboard.panels.find((p) => p.title === title);
    if (panel === undefined) throw new Error(`no panel "${title}" in dashboard.json`);
    charts.push(chart(title, await panelRows(values.prometheus, panel, start_s, end_s)));
  }
  const rows = [];
  // Each panel has its own colours and legend, as in Grafana.
  const independent = { scale: { color: "independent" }, legend: { color: "independent" } };
  for (let i = 0; i < charts.length; i += COLUMNS) {
    rows.push({ hconcat: charts.slice(i, i + COLUMNS), resolve: independent });
  }
  const spec = {
    $schema: "https://vega.github.io/schema/vega-lite/v5.json",
    title: {
      text: `${dashboard.title}: drawn from deploy/grafana/dashboard.json's queries against a running stack's Prometheus`,
      subtitle: `Not a Grafana screenshot (Grafana is not in Debian): Vega-Lite over Prometheus's query_range API; ${values.note}`,
      fontSize: 18,
      anchor: "start",
    },
    config: { background: "white", font: "DejaVu Sans", range: { category: { scheme: "tableau10" } } },
    vconcat: rows,
    resolve: independent,
  } as unknown as TopLevelSpec;
  const view = new View(parse(compile(spec).spec), { renderer: "none" });
  const svg = await view.toSVG();
  view.finalize();
  const png = await renderAsync(svg, { font: { loadSystemFonts: true, defaultFontFamily: "DejaVu Sans" } });
  writeFileSync(values.out, png.asPng());
  console.log(`wrote ${values.out}`);
}

await main();
