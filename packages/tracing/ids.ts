/**
 * Trace ids without spans, for a process that exports none (no OTLP endpoint): the active
 * context still follows awaits and still travels as a W3C `traceparent`, so every log line
 * about a transfer carries the trace_id its public request started or received, tracing on or
 * off. Nothing here loads the SDK: an AsyncLocalStorage and a traceparent parser are all it takes.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { randomUUID } from "node:crypto";
import {
  type Context,
  type ContextManager,
  context,
  propagation,
  ROOT_CONTEXT,
  type TextMapGetter,
  type TextMapPropagator,
  type TextMapSetter,
  TraceFlags,
  trace,
} from "@opentelemetry/api";
import { assert } from "#packages/runtime/assert.ts";

const TRACEPARENT = "traceparent";
/** Version 00 as the W3C Trace Context recommendation writes it; later versions start the same way. */
const TRACEPARENT_PATTERN = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-|$)/;

/** The active context in an AsyncLocalStorage: what the SDK's context manager does, minus its module. */
class StorageContextManager implements ContextManager {
  readonly #storage = new AsyncLocalStorage<Context>();

  active(): Context {
    return this.#storage.getStore() ?? ROOT_CONTEXT;
  }

  with<A extends unknown[], F extends (...args: A) => ReturnType<F>>(
    ctx: Context,
    fn: F,
    thisArg?: ThisParameterType<F>,
    ...args: A
  ): ReturnType<F> {
    return this.#storage.run(ctx, () => fn.apply(thisArg, args));
  }

  bind<T>(ctx: Context, target: T): T {
    if (typeof target !== "function") return target;
    const fn = target as unknown as (...args: unknown[]) => unknown;
    return ((...args: unknown[]) => this.with(ctx, () => fn(...args))) as T;
  }

  enable(): this {
    return this;
  }

  disable(): this {
    this.#storage.disable();
    return this;
  }
}

/** traceparent in and out; an absent, malformed or all-zero value is no context (a new trace starts). */
const traceparentPropagator: TextMapPropagator = {
  inject(ctx: Context, carrier: unknown, setter: TextMapSetter) {
    const span = trace.getSpanContext(ctx);
    if (span === undefined || !trace.isSpanContextValid(span)) return;
    const flags = (span.traceFlags & TraceFlags.SAMPLED).toString(16).padStart(2, "0");
    setter.set(carrier, TRACEPARENT, `00-${span.traceId}-${span.spanId}-${flags}`);
  },
  extract(ctx: Context, carrier: unknown, getter: TextMapGetter): Context {
    const header = getter.get(carrier, TRACEPARENT);
    const value = Array.isArray(header) ? header[0] : header;
    const match = value === undefined ? null : TRACEPARENT_PATTERN.exec(value.trim());
    if (match === null || match[1] === "ff") return ctx;
    const span = {
      traceId: match[2] as string,
      spanId: match[3] as string,
      traceFlags: Number.parseInt(match[4] as string, 16) & TraceFlags.SAMPLED,
      isRemote: true,
    };
    return trace.isSpanContextValid(span) ? trace.setSpanContext(ctx, span) : ctx;
  },
  fields: () => [TRACEPARENT],
};

/** Registers the context manager and the propagator above; with tracing on, the SDK registers its own instead. */
export function startTraceIds(): void {
  const registered =
    context.setGlobalContextManager(new StorageContextManager()) &&
    propagation.setGlobalPropagator(traceparentPropagator);
  if (!registered) stopTraceIds();
  assert(registered, "another OpenTelemetry context manager or propagator is registered in this process");
}

export function stopTraceIds(): void {
  context.disable();
  propagation.disable();
}

/**
 * A new trace for a request that brought none: random W3C ids, not sampled (no span is recorded).
 * The random hex digits come from v4 UUIDs, which Node draws from a buffer refilled in bulk (a
 * randomBytes call per request was 1.9% of transaction-service's busy time); a trace id keeps 122
 * random bits, a span id 64.
 */
export function newTraceContext(): Context {
  const trace_hex = randomUUID().replaceAll("-", "");
  const span_hex = randomUUID().replaceAll("-", "");
  return trace.setSpanContext(ROOT_CONTEXT, {
    traceId: trace_hex,
    spanId: `${span_hex.slice(0, 12)}${span_hex.slice(13, 16)}${span_hex.slice(17, 18)}`,
    traceFlags: TraceFlags.NONE,
  });
}
