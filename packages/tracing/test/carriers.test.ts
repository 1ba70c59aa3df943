/**
 * The carriers' edges, the log fields and failed spans, in one process with tracing on: what a
 * malformed or absent context does, each header shape the Kafka client may hand over, and how
 * a span that fails is exported.
 */
import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { trace } from "@opentelemetry/api";
import { pino } from "pino";
import { createHttpServer } from "#packages/http/server.ts";
import {
  contextFromKafkaHeaders,
  contextFromRow,
  extractHttpHeaders,
  injectHttpHeaders,
  injectKafkaHeaders,
  rowFromContext,
  startTracing,
  type Tracing,
  traceFields,
  traceLogMixin,
  withSpan,
} from "../index.ts";
import { type OtlpReceiver, startOtlpReceiver } from "./otlp-receiver.ts";

const TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN_ID = "00f067aa0ba902b7";
const TRACEPARENT = `00-${TRACE_ID}-${SPAN_ID}-01`;
const WAIT_MS = 30_000;

/** The parent a carrier's context hands to the next span: its trace and span ids, or undefined. */
function idsOf(
  ctx: ReturnType<typeof extractHttpHeaders>,
): { trace_id: string; span_id: string } | undefined {
  const span = trace.getSpanContext(ctx);
  return span === undefined ? undefined : { trace_id: span.traceId, span_id: span.spanId };
}

describe("tracing carriers, log fields and failed spans", () => {
  let receiver: OtlpReceiver;
  let tracing: Tracing;

  before(async () => {
    receiver = await startOtlpReceiver();
    tracing = await startTracing({
      service: "carriers-test",
      env: { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url },
      batch_delay_ms: 50,
    });
  });

  after(async () => {
    await tracing?.shutdown();
    await receiver?.close();
  });

  it("starts a new trace for a request without a context or with a malformed one, and still answers", async () => {
    const app = createHttpServer({ logger: pino({ level: "silent" }) });
    app.get("/probe/:n", async (request) => {
      const parent = extractHttpHeaders(request.headers);
      return withSpan(
        `probe ${(request.params as { n: string }).n}`,
        { kind: "server", parent },
        async () => ({}),
      );
    });
    const sent: Array<string | undefined> = [
      undefined,
      "garbage",
      `ff-${TRACE_ID}-${SPAN_ID}-01`, // a version that may not be used
      `00-${"0".repeat(32)}-${SPAN_ID}-01`, // the invalid all-zero trace id
      `00-${TRACE_ID}-${"0".repeat(16)}-01`, // the invalid all-zero parent id
      `00-${TRACE_ID.toUpperCase()}-${SPAN_ID}-01`, // upper case is not W3C
      `00-${TRACE_ID}-${SPAN_ID}-01${"x".repeat(10_000)}`,
    ];
    for (const [n, traceparent] of sent.entries()) {
      const headers = traceparent === undefined ? {} : { traceparent };
      const response = await app.inject({ method: "GET", url: `/probe/${n}`, headers });
      assert.equal(response.statusCode, 200, `probe ${n}`);
    }
    await app.close();
    await tracing.flush();
    const spans = await receiver.waitFor(
      (got) => sent.every((_, n) => got.some((s) => s.name === `probe ${n}`)),
      WAIT_MS,
    );
    const probes = spans.filter((s) => s.name.startsWith("probe "));
    assert.equal(probes.length, sent.length);
    for (const span of probes) {
      assert.equal(span.parent_span_id, "", `${span.name}: a root span`);
      assert.match(span.trace_id, /^[0-9a-f]{32}$/);
      assert.notEqual(span.trace_id, TRACE_ID, `${span.name}: a trace of its own`);
    }
    assert.equal(new Set(probes.map((s) => s.trace_id)).size, sent.length, "one new trace each");
  });

  it("writes a row's traceparent inside a span only, and reads back what it wrote", async () => {
    assert.equal(rowFromContext(), null, "outside any span");
    for (const text of [null, undefined, "", "garbage", `00-${TRACE_ID}-${SPAN_ID}`]) {
      assert.equal(idsOf(contextFromRow(text)), undefined, String(text));
    }
    assert.deepEqual(idsOf(contextFromRow(TRACEPARENT)), { trace_id: TRACE_ID, span_id: SPAN_ID });
    await withSpan("row", {}, async (span) => {
      const row = rowFromContext();
      const { traceId, spanId } = span.spanContext();
      assert.equal(row, `00-${traceId}-${spanId}-01`);
      assert.deepEqual(idsOf(contextFromRow(row)), { trace_id: traceId, span_id: spanId });
    });
  });

  it("reads Kafka headers as strings or Buffers, in a Map or an object, and writes them as strings", async () => {
    const buffers = new Map([[Buffer.from("traceparent"), Buffer.from(TRACEPARENT)]]);
    const expected = { trace_id: TRACE_ID, span_id: SPAN_ID };
    assert.deepEqual(idsOf(contextFromKafkaHeaders(buffers)), expected, "Map<Buffer, Buffer>");
    assert.deepEqual(idsOf(contextFromKafkaHeaders(new Map([["traceparent", TRACEPARENT]]))), expected);
    assert.deepEqual(idsOf(contextFromKafkaHeaders({ traceparent: TRACEPARENT })), expected);
    assert.equal(idsOf(contextFromKafkaHeaders(undefined)), undefined);
    assert.equal(idsOf(contextFromKafkaHeaders(new Map([["other", "x"]]))), undefined);
    assert.deepEqual(injectKafkaHeaders({ kind: "command" }), { kind: "command" }, "outside any span");
    // A relay that sends a batch of rows passes each row's context, with no span of its own.
    assert.equal(injectKafkaHeaders({}, contextFromRow(TRACEPARENT)).traceparent, TRACEPARENT);
    const http: Record<string, string> = {};
    assert.equal(injectHttpHeaders(http, contextFromRow(TRACEPARENT)).traceparent, TRACEPARENT);
    await withSpan("kafka", { kind: "producer" }, async (span) => {
      const headers = injectKafkaHeaders({ kind: "command" });
      assert.equal(headers.kind, "command", "keeps the headers it was given");
      assert.equal(headers.traceparent, `00-${span.spanContext().traceId}-${span.spanContext().spanId}-01`);
    });
  });

  it("writes into a fetch Headers object as into a plain one", async () => {
    await withSpan("http", { kind: "client" }, async (span) => {
      const { traceId, spanId } = span.spanContext();
      const headers = injectHttpHeaders(new Headers({ accept: "application/json" }));
      assert.equal(headers.get("traceparent"), `00-${traceId}-${spanId}-01`);
      assert.equal(headers.get("accept"), "application/json");
    });
  });

  it("puts trace_id and span_id on log lines inside a span and none outside", async () => {
    const lines: Array<Record<string, unknown>> = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(JSON.parse(chunk.toString("utf8")) as Record<string, unknown>);
        done();
      },
    });
    const logger = pino({ mixin: traceLogMixin }, sink);
    logger.info("outside");
    // pino merges a line's own fields into the mixin's object: nothing may carry over to the next line.
    logger.info({ transfer_id: "t-0" }, "outside with fields");
    logger.info({ amount: 5 }, "outside again");
    let ids = { trace_id: "", span_id: "" };
    await withSpan("logged", {}, async (span) => {
      ids = { trace_id: span.spanContext().traceId, span_id: span.spanContext().spanId };
      await Promise.resolve(); // still inside after an await
      logger.info({ transfer_id: "t-1" }, "inside");
      logger.info("inside again");
    });
    // A relay logs for a row outside any span: it binds the row's context on a child logger.
    logger.child(traceFields(contextFromRow(TRACEPARENT))).info("relayed");
    const line = (msg: string) => lines.find((l) => l.msg === msg);
    assert.equal(line("outside")?.trace_id, undefined);
    assert.equal(line("outside")?.span_id, undefined);
    assert.equal(line("outside with fields")?.transfer_id, "t-0");
    assert.equal(line("outside again")?.transfer_id, undefined, "no field left over from the line before");
    assert.deepEqual(
      {
        trace_id: line("inside")?.trace_id,
        span_id: line("inside")?.span_id,
        transfer_id: line("inside")?.transfer_id,
      },
      { ...ids, transfer_id: "t-1" },
    );
    assert.equal(line("inside again")?.transfer_id, undefined, "no field left over from the line before");
    assert.equal(line("inside again")?.span_id, ids.span_id);
    assert.equal(line("relayed")?.trace_id, TRACE_ID);
    assert.equal(line("relayed")?.span_id, SPAN_ID);
  });

  it("exports a span whose function threw as failed, and rethrows the same error", async () => {
    const boom = new Error("ledger unavailable");
    await assert.rejects(
      withSpan("failing step", { attributes: { transfer_id: "t-2" } }, async () => {
        throw boom;
      }),
      (error) => error === boom,
    );
    await tracing.flush();
    const spans = await receiver.waitFor((got) => got.some((s) => s.name === "failing step"), WAIT_MS);
    const failed = spans.find((s) => s.name === "failing step");
    assert.equal(failed?.status_code, 2, "STATUS_CODE_ERROR");
    assert.equal(failed?.attributes.transfer_id, "t-2");
  });
});
