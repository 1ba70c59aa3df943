/**
 * A service's tracing in two calls: startServiceTracing() before the listeners are built (spans are
 * exported only when OTEL_EXPORTER_OTLP_ENDPOINT is set; failed exports are logged, never fatal),
 * then traceListeners() to give every request on both listeners its server span.
 */
import type { Listeners } from "#packages/http/server.ts";
import type { Logger } from "#packages/log/index.ts";
import { startTracing, type Tracing, traceHttpServer } from "./index.ts";

export function startServiceTracing(service: string, logger: Logger): Promise<Tracing> {
  return startTracing({ service, on_export_error: (err) => logger.warn({ err }, "span export failed") });
}

/** Call right after createListeners, before any route: with tracing off it adds nothing. */
export function traceListeners(listeners: Listeners): void {
  traceHttpServer(listeners.public);
  traceHttpServer(listeners.internal);
}
