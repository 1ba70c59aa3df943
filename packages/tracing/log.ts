/**
 * trace_id and span_id of the active context on every log line written inside it, so that a
 * transfer's lines can be found from its trace and back; with tracing off the context holds
 * the ids its request started or received (ids.ts), so lines carry them all the same. packages/log passes traceLogMixin as
 * pino's `mixin`; code that logs outside the span (a relay, a retry loop) binds traceFields()
 * of the row's or message's context on a child logger: `logger.child(traceFields(parent))`.
 */
import { type Context, context, trace } from "@opentelemetry/api";

export interface TraceFields {
  trace_id?: string;
  span_id?: string;
}

/**
 * The ids of the span in the given context (default the active one); {} when there is none.
 * A new object every time: pino merges a line's fields into what its mixin returns.
 */
export function traceFields(from?: Context): TraceFields {
  const span = trace.getSpanContext(from ?? context.active());
  if (span === undefined || !trace.isSpanContextValid(span)) return {};
  return { trace_id: span.traceId, span_id: span.spanId };
}

/** pino's `mixin` option: `pino({ ..., mixin: traceLogMixin })`. */
export function traceLogMixin(): TraceFields {
  return traceFields();
}
