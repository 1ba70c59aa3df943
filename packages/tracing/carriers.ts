/**
 * One home for each way a trace context leaves or enters a process. Each inject writes the
 * active context (or the one given) as W3C traceparent/tracestate; each extract returns the
 * context to pass as withSpan's parent. Malformed or absent values extract to the root
 * context: an untrusted header starts a new trace, it never fails a request. With tracing off
 * they carry the trace ids alone (ids.ts), so that log lines downstream still name the trace.
 */
import type { IncomingHttpHeaders } from "node:http";
import { type Context, context, propagation, ROOT_CONTEXT, type TextMapGetter } from "@opentelemetry/api";

/** The W3C header that carries trace id, parent span id and flags. */
export const TRACEPARENT = "traceparent";

// --- HTTP --------------------------------------------------------------------------------------

/**
 * Add the context's headers to an outgoing request's headers (a plain object, as fetch and
 * undici take, or a Headers) and return them: `fetch(url, { headers: injectHttpHeaders({...}) })`.
 */
export function injectHttpHeaders<H extends Record<string, string> | Headers>(
  headers: H,
  from: Context = context.active(),
): H {
  if (headers instanceof Headers) {
    propagation.inject(from, headers, { set: (carrier, key, value) => carrier.set(key, value) });
  } else {
    propagation.inject(from, headers);
  }
  return headers;
}

/** The context an incoming request carries (Fastify's request.headers, node's IncomingMessage.headers). */
export function extractHttpHeaders(headers: IncomingHttpHeaders): Context {
  // Node lower-cases header names; the propagator asks for lower-case names.
  return propagation.extract(ROOT_CONTEXT, headers);
}

// --- A database row ----------------------------------------------------------------------------

/**
 * The context as the text of a row's `traceparent` column (written in the same commit as the
 * row, so the relay that sends it later continues the trace); null when there is no valid span.
 */
export function rowFromContext(from: Context = context.active()): string | null {
  const carrier: Record<string, string> = {};
  propagation.inject(from, carrier, { set: (c, key, value) => (c[key] = value) });
  return carrier[TRACEPARENT] ?? null;
}

/** The context a row's `traceparent` text stands for (null, empty or malformed: the root context). */
export function contextFromRow(traceparent: string | null | undefined): Context {
  if (traceparent == null || traceparent === "") return ROOT_CONTEXT;
  return propagation.extract(ROOT_CONTEXT, { [TRACEPARENT]: traceparent });
}

// --- Kafka ---------------------------------------------------------------------------------------

/**
 * Headers of a Kafka message as @platformatic/kafka gives them: on send, a Map or a plain object
 * (strings with the project's stringSerializers); on consume, message.headers, a Map whose keys
 * and values are strings (stringDeserializers) or Buffers (the default deserializers).
 */
export type KafkaHeaders =
  | Map<string, string>
  | Map<Buffer, Buffer>
  | Map<string | Buffer, string | Buffer>
  | Record<string, string>;

/** Add the context's headers to a message about to be sent: `{ topic, key, value, headers: injectKafkaHeaders() }`. */
export function injectKafkaHeaders(
  headers: Record<string, string> = {},
  from: Context = context.active(),
): Record<string, string> {
  propagation.inject(from, headers);
  return headers;
}

const kafkaGetter: TextMapGetter<KafkaHeaders> = {
  keys: (carrier) =>
    carrier instanceof Map ? [...carrier.keys()].map((key) => key.toString()) : Object.keys(carrier),
  get(carrier, key) {
    if (!(carrier instanceof Map)) return carrier[key];
    // A handful of headers per message: a scan is cheaper than building a lookup.
    for (const [name, value] of carrier as Map<string | Buffer, string | Buffer>) {
      if (name.toString() === key) return value.toString();
    }
    return undefined;
  },
};

/** The context a consumed message carries (message.headers); none: the root context. */
export function contextFromKafkaHeaders(headers: KafkaHeaders | undefined): Context {
  if (headers === undefined) return ROOT_CONTEXT;
  return propagation.extract(ROOT_CONTEXT, headers, kafkaGetter);
}
