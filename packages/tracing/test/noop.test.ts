/**
 * With no OTLP endpoint, tracing costs nothing: startTracing loads none of the SDK's modules, and
 * withSpan makes no span (counted, not timed); the carriers and log lines still carry the trace
 * ids a request brought or was given. This file never starts tracing with an endpoint in its own process.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { Writable } from "node:stream";
import { describe, it, mock } from "node:test";
import { context, trace } from "@opentelemetry/api";
import { pino } from "pino";
import { createHttpServer } from "#packages/http/server.ts";
import { createLogger } from "#packages/log/index.ts";
import { withTimeout } from "#packages/runtime/index.ts";
import {
  contextFromKafkaHeaders,
  contextFromRow,
  extractHttpHeaders,
  injectHttpHeaders,
  injectKafkaHeaders,
  rowFromContext,
  type Span,
  startTracing,
  traceFields,
  traceHttpServer,
  traceLogMixin,
  tracesUrl,
  withSpan,
} from "../index.ts";

const TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/** The URLs of every module a fresh process loads while it starts tracing with the given env and makes a span. */
async function modulesLoaded(env: Record<string, string>): Promise<{ enabled: boolean; urls: string[] }> {
  const index = new URL("../index.ts", import.meta.url).href;
  const script = `
    import { registerHooks } from "node:module";
    const urls = [];
    registerHooks({ load(url, context, next) { urls.push(url); return next(url, context); } });
    const { startTracing, withSpan } = await import(${JSON.stringify(index)});
    const tracing = await startTracing({ service: "noop-test", env: ${JSON.stringify(env)} });
    await withSpan("a span", { kind: "server" }, async () => {});
    // Nobody listens at the endpoint: the last export fails, which is not what this probe is about.
    await tracing.shutdown().catch(() => {});
    process.stdout.write(JSON.stringify({ enabled: tracing.enabled, urls }), () => process.exit(0));
  `;
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  let out = "";
  child.stdout.on("data", (chunk: Buffer) => {
    out += chunk.toString("utf8");
  });
  const [code] = (await withTimeout(once(child, "exit"), 30_000, "module probe")) as [number | null];
  assert.equal(code, 0);
  return JSON.parse(out) as { enabled: boolean; urls: string[] };
}

const SDK_MODULES = /@opentelemetry\/(?!api\/)|\/packages\/tracing\/sdk\.ts$/;

describe("tracing off: no endpoint, no cost", () => {
  it("loads no SDK module without an endpoint, and does load it with one (so the probe sees loads)", async () => {
    const off = await modulesLoaded({});
    assert.equal(off.enabled, false);
    assert.ok(
      off.urls.some((url) => url.endsWith("/packages/tracing/index.ts")),
      "the probe records loads",
    );
    assert.deepEqual(
      off.urls.filter((url) => SDK_MODULES.test(url)),
      [],
    );
    const on = await modulesLoaded({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:9/" });
    assert.equal(on.enabled, true);
    assert.ok(on.urls.some((url) => url.includes("@opentelemetry/sdk-trace/")));
    assert.ok(on.urls.some((url) => url.includes("@opentelemetry/exporter-trace-otlp-http/")));
  });

  it("makes no span and enters no context per call, and carries no ids it was not given", async () => {
    const tracing = await startTracing({ service: "noop-test", env: {} });
    assert.equal(tracing.enabled, false);
    const entered = mock.method(context, "with");
    const tracers = mock.method(trace, "getTracer");
    try {
      const calls = 10_000;
      const handed = new Set<Span>();
      let ran = 0;
      for (let i = 0; i < calls; i++) {
        await withSpan(
          "transfer",
          { kind: "server", attributes: { transfer_id: String(i) } },
          async (span) => {
            handed.add(span);
            assert.deepEqual(traceFields(), {});
            ran += 1;
          },
        );
        const headers = injectHttpHeaders({ "content-type": "application/json" });
        assert.deepEqual(Object.keys(headers), ["content-type"]);
        assert.deepEqual(injectKafkaHeaders(), {});
        assert.equal(rowFromContext(), null);
      }
      assert.equal(ran, calls);
      // One shared, non-recording span for the whole process.
      assert.equal(handed.size, 1);
      assert.equal([...handed][0]?.isRecording(), false);
      assert.equal(entered.mock.callCount(), 0, "context.with");
      assert.equal(tracers.mock.callCount(), 0, "trace.getTracer");
    } finally {
      mock.restoreAll();
      await tracing.shutdown();
    }
  });

  it("carries the trace ids a request brought, or new ones, through every carrier to the log lines", async () => {
    const tracing = await startTracing({ service: "noop-test", env: {} });
    const lines: Array<Record<string, unknown>> = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(JSON.parse(chunk.toString("utf8")) as Record<string, unknown>);
        done();
      },
    });
    const logger = pino({ mixin: traceLogMixin }, sink);
    const app = createHttpServer({ logger: createLogger("noop-test", "silent") });
    try {
      traceHttpServer(app);
      const seen: Array<{ row: string | null; kafka: Record<string, string>; http: string | undefined }> = [];
      app.get("/probe", async () => {
        logger.info({ transfer_id: "t-1" }, "in the request");
        const row = rowFromContext();
        // A consumer continues what the row carried, as the record writer does with a message.
        await withSpan("consume", { kind: "consumer", parent: contextFromRow(row) }, async () => {
          logger.info({ transfer_id: "t-1" }, "in the message");
        });
        seen.push({
          row,
          kafka: injectKafkaHeaders(),
          http: injectHttpHeaders<Record<string, string>>({}).traceparent,
        });
        return { ok: true };
      });
      await app.inject({ method: "GET", url: "/probe", headers: { traceparent: TRACEPARENT } });
      await app.inject({ method: "GET", url: "/probe" });
      await app.inject({
        method: "GET",
        url: "/probe",
        headers: { traceparent: "00-00000000000000000000000000000000-00f067aa0ba902b7-01" },
      });
      logger.info({ transfer_id: "t-1" }, "outside any request");
      assert.equal(seen.length, 3);
      // The client's trace is continued, its flags kept.
      assert.equal(seen[0]?.row, TRACEPARENT);
      assert.equal(seen[0]?.kafka.traceparent, TRACEPARENT);
      assert.equal(seen[0]?.http, TRACEPARENT);
      // Without one (or with an invalid one), a new valid trace, not sampled: no span was recorded.
      for (const made of [seen[1], seen[2]]) {
        assert.match(made?.row ?? "", /^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/);
        assert.doesNotMatch(made?.row ?? "", /^00-0{32}-/);
      }
      assert.notEqual(seen[1]?.row, seen[2]?.row);
      const traceOf = (row: string | null | undefined) => row?.split("-")[1];
      assert.deepEqual(
        lines.map((line) => [line.msg, line.trace_id]),
        [
          ["in the request", traceOf(TRACEPARENT)],
          ["in the message", traceOf(TRACEPARENT)],
          ["in the request", traceOf(seen[1]?.row)],
          ["in the message", traceOf(seen[1]?.row)],
          ["in the request", traceOf(seen[2]?.row)],
          ["in the message", traceOf(seen[2]?.row)],
          ["outside any request", undefined],
        ],
      );
      assert.equal(
        trace.getSpanContext(contextFromKafkaHeaders(new Map([["traceparent", TRACEPARENT]])))?.traceId,
        traceOf(TRACEPARENT),
      );
      assert.equal(trace.getSpanContext(extractHttpHeaders({ traceparent: "not-a-traceparent" })), undefined);
    } finally {
      await app.close();
      await tracing.shutdown();
    }
  });

  it("logs through the mixin with no trace fields and nothing carried from one line to the next", () => {
    const lines: Array<Record<string, unknown>> = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(JSON.parse(chunk.toString("utf8")) as Record<string, unknown>);
        done();
      },
    });
    const logger = pino({ mixin: traceLogMixin }, sink);
    logger.info({ transfer_id: "t-1" }, "first");
    logger.info({ amount: 5 }, "second");
    assert.deepEqual(
      lines.map(({ msg, transfer_id, amount, trace_id }) => ({ msg, transfer_id, amount, trace_id })),
      [
        { msg: "first", transfer_id: "t-1", amount: undefined, trace_id: undefined },
        { msg: "second", transfer_id: undefined, amount: 5, trace_id: undefined },
      ],
    );
  });

  it("reads the endpoint from the standard variables and refuses a malformed one by name", () => {
    assert.equal(tracesUrl({}), undefined);
    assert.equal(tracesUrl({ OTEL_EXPORTER_OTLP_ENDPOINT: "" }), undefined);
    assert.equal(
      tracesUrl({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318/" }),
      "http://collector:4318/v1/traces",
    );
    assert.equal(
      tracesUrl({
        OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://other:4318/custom",
      }),
      "http://other:4318/custom",
    );
    assert.throws(
      () => tracesUrl({ OTEL_EXPORTER_OTLP_ENDPOINT: "not a url" }),
      /OTEL_EXPORTER_OTLP_ENDPOINT/,
    );
  });
});
