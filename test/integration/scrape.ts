/** One sample of a service's /metrics (its internal listener), read as Prometheus would scrape it. */
import assert from "node:assert/strict";

/** The value of `name` with exactly these labels on `base`'s /metrics; undefined when the series is absent. */
export async function scrapeSample(
  base: string,
  name: string,
  labels: Record<string, string> = {},
): Promise<number | undefined> {
  const answer = await fetch(`${base}/metrics`, { signal: AbortSignal.timeout(15_000) });
  assert.equal(answer.status, 200, `${base}/metrics`);
  const wanted = Object.entries(labels)
    .map(([key, value]) => `${key}="${value}"`)
    .sort()
    .join(",");
  for (const line of (await answer.text()).split("\n")) {
    const match = /^([a-z_:]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (match === null || match[1] !== name) continue;
    const got = (match[2] ?? "")
      .split(/,(?=[a-z_]+=")/)
      .filter(Boolean)
      .sort()
      .join(",");
    if (got === wanted) return Number(match[3]);
  }
  return undefined;
}
