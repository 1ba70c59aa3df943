// What the alert rules and the dashboard may name in PromQL: the catalogue's metrics (histograms
// by their series too), the Node.js process metrics every service exposes, and `up`.
import { createMetrics, metricNames } from "../index.ts";

const HISTOGRAM_SERIES = /_(bucket|sum|count)$/;
/** Series that Prometheus makes itself for every target. */
const PROMETHEUS_SERIES = ["up", "scrape_duration_seconds", "scrape_samples_scraped"];

/** Every metric a service's /metrics has: the catalogue and the default process metrics. */
export async function exposedMetricNames(): Promise<string[]> {
  const metrics = createMetrics();
  const all = await metrics.registry.getMetricsAsJSON();
  return [...new Set([...metricNames, ...all.map((metric) => metric.name)])];
}

/** The metric names a PromQL text refers to: identifiers outside label matchers, ranges,
 * strings and Grafana variables, and not followed by "(" (functions). */
export function metricsIn(promql: string): string[] {
  const withoutMatchers = promql
    .replace(/"(?:[^"\\]|\\.)*"/g, "")
    .replace(/\{[^}]*\}|\[[^\]]*\]|\$\{?\w+\}?/g, "")
    .replace(/\b(by|without|on|ignoring)\s*\([^)]*\)/g, "");
  const names = withoutMatchers.match(/\b[a-z_][a-z0-9_]*\b(?!\s*\()/g) ?? [];
  const keywords = new Set([
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "group_left",
    "group_right",
    "inf",
    "nan",
  ]);
  return [...new Set(names.filter((name) => (!keywords.has(name) && /_/.test(name)) || name === "up"))];
}

/** Whether `name` (possibly a histogram's _bucket, _sum or _count) is among `exposed`. */
export function known(name: string, exposed: readonly string[]): boolean {
  return (
    PROMETHEUS_SERIES.includes(name) ||
    exposed.includes(name) ||
    exposed.includes(name.replace(HISTOGRAM_SERIES, ""))
  );
}
