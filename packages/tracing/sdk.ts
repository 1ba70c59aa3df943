/**
 * The OpenTelemetry SDK, imported only by startTracing() when an endpoint is set: a tracer
 * provider with service.name, a batch processor that exports OTLP/HTTP (JSON) within bounds,
 * async-local context (so the active span follows awaits) and the W3C trace-context propagator.
 */
import { hostname } from "node:os";
import { context, propagation, trace } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { loggingErrorHandler, setGlobalErrorHandler, W3CTraceContextPropagator } from "@opentelemetry/core";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BatchSpanProcessor, TracerProvider } from "@opentelemetry/sdk-trace";
import { assert, InvariantError } from "#packages/runtime/assert.ts";
import { withTimeout } from "#packages/runtime/index.ts";
import type { TracingSdk } from "./index.ts";

export interface SdkOptions {
  service: string;
  url: string;
  queue_max: number;
  batch_max: number;
  batch_delay_ms: number;
  export_timeout_ms: number;
  shutdown_timeout_ms: number;
  on_export_error: (error: unknown) => void;
}

export function startSdk(options: SdkOptions): TracingSdk {
  assert(options.batch_max >= 1, "tracing batch_max must be at least 1");
  assert(options.batch_max <= options.queue_max, "tracing batch_max must not exceed queue_max");
  const exporter = new OTLPTraceExporter({ url: options.url, timeoutMillis: options.export_timeout_ms });
  const processor = new BatchSpanProcessor({
    exporter,
    maxQueueSize: options.queue_max,
    maxExportBatchSize: options.batch_max,
    scheduledDelayMillis: options.batch_delay_ms,
    exportTimeoutMillis: options.export_timeout_ms,
  });
  const provider = new TracerProvider({
    // Copies of one service share its name; the instance tells which copy made a span.
    resource: resourceFromAttributes({
      "service.name": options.service,
      "service.instance.id": `${hostname()}/${process.pid}`,
    }),
    spanProcessors: [processor],
  });
  const contextManager = new AsyncLocalStorageContextManager().enable();
  // The API keeps the first registration of each; a second one would leave our spans unseen.
  const registered = [
    context.setGlobalContextManager(contextManager),
    propagation.setGlobalPropagator(new W3CTraceContextPropagator()),
    trace.setGlobalTracerProvider(provider),
  ];
  if (registered.includes(false)) {
    unregister();
    throw new InvariantError("another OpenTelemetry SDK is registered in this process");
  }
  // The batch processor reports a failed background export here (a flush's failure rejects instead).
  setGlobalErrorHandler(options.on_export_error);
  // A collector that does not answer must hold neither a flush nor a shutdown past its bound.
  const flush_ms = options.export_timeout_ms;
  return {
    flush: () =>
      withTimeout(provider.forceFlush({ timeoutMillis: flush_ms }), flush_ms + 1_000, "span flush"),
    async shutdown() {
      try {
        await withTimeout(provider.shutdown(), options.shutdown_timeout_ms, "tracing shutdown");
      } finally {
        unregister();
      }
    },
  };
}

function unregister(): void {
  trace.disable();
  propagation.disable();
  context.disable();
  setGlobalErrorHandler(loggingErrorHandler());
}
