/**
 * Distributed tracing (OpenTelemetry, W3C trace context) for every service.
 *
 * startTracing() once at start-up: when OTEL_EXPORTER_OTLP_ENDPOINT (or
 * OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set it loads the SDK (sdk.ts) and exports spans over
 * OTLP/HTTP; otherwise it loads nothing and withSpan() only calls its function, so a process
 * without a collector pays for neither modules nor per-request objects.
 *
 * How a context travels between processes has one home each, in carriers.ts (HTTP headers,
 * an outbox row's text, Kafka headers); log lines get trace_id/span_id from log.ts.
 */
import {
  type Attributes,
  type Context,
  context,
  type Span,
  SpanKind,
  SpanStatusCode,
  trace,
} from "@opentelemetry/api";
import { loadConfig } from "#packages/config/index.ts";
import { assert } from "#packages/runtime/assert.ts";
import { tracingEnv } from "./env.ts";
import { startTraceIds, stopTraceIds } from "./ids.ts";
import { setTracingEnabled, TRACER_NAME, tracingEnabled } from "./state.ts";

export {
  contextFromKafkaHeaders,
  contextFromRow,
  extractHttpHeaders,
  injectHttpHeaders,
  injectKafkaHeaders,
  type KafkaHeaders,
  rowFromContext,
} from "./carriers.ts";
export { traceHttpServer } from "./http.ts";
export { traceFields, traceLogMixin } from "./log.ts";
export type { Attributes, Context, Span };
/** For span.setStatus() where an outcome, not a throw, is the failure (withSpan marks a throw itself). */
export { SpanStatusCode, TRACER_NAME, tracingEnabled, tracingEnv };

export interface TracingOptions {
  /** service.name of every span this process exports. */
  service: string;
  /** Where the variables above are read (tests pass their own). */
  env?: NodeJS.ProcessEnv;
  /** Spans kept while the collector is slow or away; further spans are dropped, never queued without bound. */
  queue_max?: number;
  /** Spans per export request. */
  batch_max?: number;
  /** How long finished spans wait to be batched. */
  batch_delay_ms?: number;
  /** Bound on one export request (its retries included). */
  export_timeout_ms?: number;
  /** Bound on the last flush: spans must not hold up a stopping service (onShutdown allows 10 s in all). */
  shutdown_timeout_ms?: number;
  /**
   * Told when spans could not be exported in the background (collector away, refusing): the
   * service logs it. Spans are then dropped; nothing else is affected. Default: silent.
   */
  on_export_error?: (error: unknown) => void;
}

export interface Tracing {
  readonly enabled: boolean;
  /** Export every finished span now (tests; a process about to be killed). */
  flush(): Promise<void>;
  /**
   * Flush (bounded), then stop exporting and unregister, so a later startTracing() may start
   * afresh. Rejects if the last spans could not be sent; tracing is stopped either way.
   */
  shutdown(): Promise<void>;
}

/** What sdk.ts hands back: the SDK stays behind this interface so that only sdk.ts imports it. */
export interface TracingSdk {
  flush(): Promise<void>;
  shutdown(): Promise<void>;
}

const disabled: Tracing = {
  enabled: false,
  flush: async () => {},
  shutdown: async () => {
    stopTraceIds();
    active = undefined;
  },
};

let active: Tracing | undefined;

/** The spans' URL, or undefined when tracing is off. */
export function tracesUrl(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const config = loadConfig(tracingEnv, env);
  if (config.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT !== "") return config.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT;
  if (config.OTEL_EXPORTER_OTLP_ENDPOINT === "") return undefined;
  return `${config.OTEL_EXPORTER_OTLP_ENDPOINT.replace(/\/+$/, "")}/v1/traces`;
}

/** Once per process, before the first request or message; a bad URL stops the start with its variable's name. */
export async function startTracing(options: TracingOptions): Promise<Tracing> {
  assert(active === undefined, "tracing already started in this process");
  const url = tracesUrl(options.env);
  if (url === undefined) {
    startTraceIds();
    active = disabled;
    return disabled;
  }
  const { startSdk } = await import("./sdk.ts");
  const sdk = startSdk({
    service: options.service,
    url,
    queue_max: options.queue_max ?? 2_048,
    batch_max: options.batch_max ?? 512,
    batch_delay_ms: options.batch_delay_ms ?? 1_000,
    export_timeout_ms: options.export_timeout_ms ?? 10_000,
    shutdown_timeout_ms: options.shutdown_timeout_ms ?? 3_000,
    on_export_error: options.on_export_error ?? (() => {}),
  });
  const tracing: Tracing = {
    enabled: true,
    flush: () => sdk.flush(),
    shutdown: async () => {
      try {
        await sdk.shutdown();
      } finally {
        setTracingEnabled(false);
        active = undefined;
        tracer = undefined;
      }
    },
  };
  active = tracing;
  setTracingEnabled(true);
  return tracing;
}

export type SpanKindName = "internal" | "server" | "client" | "producer" | "consumer";

const kinds: Record<SpanKindName, SpanKind> = {
  internal: SpanKind.INTERNAL,
  server: SpanKind.SERVER,
  client: SpanKind.CLIENT,
  producer: SpanKind.PRODUCER,
  consumer: SpanKind.CONSUMER,
};

export interface SpanSpec {
  /** server: a request received; client: a request sent; producer/consumer: a message. Default internal. */
  kind?: SpanKindName;
  /** Bounded values only (transfer_id, route template, topic), never bodies or secrets. */
  attributes?: Attributes;
  /** The context the span continues (from a carrier); default the active one. */
  parent?: Context;
}

/** Handed to fn when tracing is off: one object for the life of the process, it records nothing. */
const NOT_RECORDING: Span = trace.wrapSpanContext({ traceId: "", spanId: "", traceFlags: 0 });

let tracer: ReturnType<typeof trace.getTracer> | undefined;

/**
 * Run fn in a new span that is the active one for everything fn awaits (so carriers and log
 * lines inside see it), end it when fn settles, and mark it failed if fn throws.
 */
export function withSpan<T>(name: string, spec: SpanSpec, fn: (span: Span) => Promise<T>): Promise<T> {
  if (!tracingEnabled()) {
    // As with tracing on, a function that throws before its first await gives a rejection.
    try {
      // A message's trace ids become the active ones (ids.ts): the lines and messages of its handling carry them.
      const parent = spec.parent;
      if (parent !== undefined && trace.getSpanContext(parent) !== undefined) {
        return context.with(parent, () => fn(NOT_RECORDING));
      }
      return fn(NOT_RECORDING);
    } catch (error) {
      return Promise.reject(error);
    }
  }
  tracer ??= trace.getTracer(TRACER_NAME);
  const options = { kind: kinds[spec.kind ?? "internal"], attributes: spec.attributes };
  return tracer.startActiveSpan(name, options, spec.parent ?? context.active(), async (span) => {
    try {
      return await fn(span);
    } catch (error) {
      span.recordException(error instanceof Error ? error : String(error));
      span.setStatus({
        code: SpanStatusCode.ERROR,
        message: error instanceof Error ? error.message : undefined,
      });
      throw error;
    } finally {
      span.end();
    }
  });
}
