/**
 * A service's metrics in one call at start-up: the registry, both listeners' HTTP metrics and
 * rate-limit refusals, and GET /metrics on the internal listener only (the public one must not
 * tell the world how busy the system is).
 */
import { RateLimitedError } from "#packages/http/rate-limit.ts";
import type { Listeners } from "#packages/http/server.ts";
import type { Logger } from "#packages/log/index.ts";
import { createMetrics, instrumentHttp, type Metrics, serveMetrics, UNMATCHED_ROUTE } from "./index.ts";

export function startServiceMetrics(listeners: Listeners, logger: Logger): Metrics {
  const metrics = createMetrics({
    on_collect_error: (collector, err) => logger.warn({ err, collector }, "metrics collector failed"),
  });
  for (const [name, app] of [
    ["public", listeners.public],
    ["internal", listeners.internal],
  ] as const) {
    instrumentHttp(app, metrics, name);
    app.addHook("onError", async (request, _reply, error) => {
      if (error instanceof RateLimitedError) {
        metrics.rateLimitRefused(request.routeOptions.url ?? UNMATCHED_ROUTE, error.limit);
      }
    });
  }
  serveMetrics(listeners.internal, metrics);
  return metrics;
}
