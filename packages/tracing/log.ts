/**
 * trace_id and span_id of the active span on every log line written inside it, so that a
 * transfer's lines can be found from its trace and back. packages/log passes traceLogMixin as
 * pino's `mixin`; code that logs outside the span (a relay, a retry loop) binds traceFields()
 * of the row's or message's context on a child logger: `logger.child(traceFields(parent))`.
 */
import { type Context, context, trace } from "@opentelemetry/api";
import { tracingEnabled } from "./state.ts";

export interface TraceFields {
  trace_id?: string;
  span_id?: string;
}

// Shared, never mutated: a line outside any span (or with tracing off) allocates nothing.
const NONE: TraceFields = Object.freeze({});

/** The ids of the span in the given context (default the active one); {} when there is none. */
export function traceFields(from?: Context): TraceFields {
  if (!tracingEnabled()) return NONE;
  const span = trace.getSpanContext(from ?? context.active());
  if (span === undefined || !trace.isSpanContextValid(span)) return NONE;
  return { trace_id: span.traceId, span_id: span.spanId };
}

/** pino's `mixin` option: `pino({ ..., mixin: traceLogMixin })`. */
export function traceLogMixin(): TraceFields {
  return traceFields();
}
