/**
 * A server span for every request a Fastify app answers, continuing the caller's trace from
 * its headers: named after the route's template (`POST /transactions/transfer`, never a URL with
 * ids), timed from the request's arrival to the response's end, and the active span while the
 * handler runs, so that carriers and log lines inside it see the request's trace.
 */
import { type Context, context, type Span, SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import type { HttpServer } from "#packages/http/server.ts";
import { extractHttpHeaders } from "./carriers.ts";
import { newTraceContext } from "./ids.ts";
import { TRACER_NAME, tracingEnabled } from "./state.ts";

/** Call once per app, after startTracing() and before the routes; with tracing off it carries trace ids only. */
export function traceHttpServer(app: HttpServer): void {
  if (!tracingEnabled()) {
    carryTraceIds(app);
    return;
  }
  const tracer = trace.getTracer(TRACER_NAME);
  const spans = new WeakMap<object, { span: Span; active: Context }>();
  app.addHook("onRequest", (request, _reply, done) => {
    const route = request.routeOptions.url;
    const parent = extractHttpHeaders(request.headers);
    const span = tracer.startSpan(
      route === undefined ? request.method : `${request.method} ${route}`,
      {
        kind: SpanKind.SERVER,
        attributes: {
          "http.request.method": request.method,
          ...(route === undefined ? {} : { "http.route": route }),
        },
      },
      parent,
    );
    spans.set(request, { span, active: trace.setSpan(parent, span) });
    done();
  });
  // After parsing and validation, before the handler: what runs from here on (the handler, its
  // awaits, the reply) runs in the request's context. A callback hook, so that Fastify calls the
  // next step inside context.with rather than from a promise made outside it.
  app.addHook("preHandler", (request, _reply, done) => {
    const traced = spans.get(request);
    if (traced === undefined) return done();
    context.with(traced.active, done);
  });
  app.addHook("onError", (request, _reply, error, done) => {
    spans.get(request)?.span.recordException(error);
    done();
  });
  // A caller that hung up gets no response, so onResponse never comes: the span ends here.
  app.addHook("onRequestAbort", (request, done) => {
    const traced = spans.get(request);
    if (traced !== undefined) {
      traced.span.setStatus({ code: SpanStatusCode.ERROR, message: "the caller aborted the request" });
      traced.span.end();
      spans.delete(request);
    }
    done();
  });
  app.addHook("onResponse", (request, reply, done) => {
    const traced = spans.get(request);
    if (traced !== undefined) {
      traced.span.setAttribute("http.response.status_code", reply.statusCode);
      // A 4xx is the caller's mistake, not this server's failure (OpenTelemetry's HTTP conventions).
      if (reply.statusCode >= 500) traced.span.setStatus({ code: SpanStatusCode.ERROR });
      traced.span.end();
      spans.delete(request);
    }
    done();
  });
}

/**
 * Tracing off: no span, but the request's handler runs in the trace ids its caller sent, or in
 * new ones, so that its log lines and what it sends on (ledger calls, outbox rows) share them.
 */
function carryTraceIds(app: HttpServer): void {
  const contexts = new WeakMap<object, Context>();
  app.addHook("onRequest", (request, _reply, done) => {
    const sent = extractHttpHeaders(request.headers);
    contexts.set(request, trace.getSpanContext(sent) === undefined ? newTraceContext() : sent);
    done();
  });
  app.addHook("preHandler", (request, _reply, done) => {
    const ids = contexts.get(request);
    if (ids === undefined) return done();
    context.with(ids, done);
  });
}
