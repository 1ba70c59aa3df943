/**
 * traceHttpServer over real sockets: a server span per request, named by route template, that
 * continues the caller's trace and is the active span in the handler, after the body was read.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setImmediate as tick } from "node:timers/promises";
import { pino } from "pino";
import { createHttpServer, type HttpServer } from "#packages/http/server.ts";
import { rowFromContext, startTracing, type Tracing, traceFields, traceHttpServer } from "../index.ts";
import { OtlpKind, type OtlpReceiver, startOtlpReceiver } from "./otlp-receiver.ts";

const TRACE_ID = "0af7651916cd43dd8448eb211c80319c";
const SPAN_ID = "b7ad6b7169203331";
const WAIT_MS = 30_000;

describe("tracing: the server span of every request", () => {
  let receiver: OtlpReceiver;
  let tracing: Tracing;
  let app: HttpServer;
  let base: string;

  before(async () => {
    receiver = await startOtlpReceiver();
    tracing = await startTracing({
      service: "http-test",
      env: { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url },
      batch_delay_ms: 50,
    });
    app = createHttpServer({ logger: pino({ level: "silent" }) });
    traceHttpServer(app);
    app.post("/transfers/:id/steps", async (request) => {
      // The context survives the handler's awaits, however requests interleave.
      for (let i = Math.floor(Math.random() * 5); i >= 0; i--) await tick();
      return { row: rowFromContext(), fields: traceFields(), body: request.body };
    });
    app.get("/boom", async () => {
      throw new Error("the ledger is down");
    });
    base = await app.listen({ host: "127.0.0.1", port: 0 });
  });

  after(async () => {
    await app?.close();
    await tracing?.shutdown();
    await receiver?.close();
  });

  it("continues the caller's trace in a span named by the route, active in the handler", async () => {
    const response = await fetch(`${base}/transfers/abc-123/steps`, {
      method: "POST",
      headers: { "content-type": "application/json", traceparent: `00-${TRACE_ID}-${SPAN_ID}-01` },
      body: JSON.stringify({ amount: 5 }),
    });
    assert.equal(response.status, 200);
    const answer = (await response.json()) as {
      row: string | null;
      fields: Record<string, string>;
      body: unknown;
    };
    assert.deepEqual(answer.body, { amount: 5 });
    await tracing.flush();
    const spans = await receiver.waitFor(
      (got) => got.some((s) => s.name === "POST /transfers/:id/steps"),
      WAIT_MS,
    );
    const server = spans.find((s) => s.name === "POST /transfers/:id/steps");
    assert.equal(server?.kind, OtlpKind.server);
    assert.equal(server?.trace_id, TRACE_ID);
    assert.equal(server?.parent_span_id, SPAN_ID);
    assert.equal(server?.attributes["http.route"], "/transfers/:id/steps");
    assert.equal(server?.attributes["http.response.status_code"], 200);
    assert.equal(answer.row, `00-${TRACE_ID}-${server?.span_id}-01`, "the handler's active span");
    assert.deepEqual(answer.fields, { trace_id: TRACE_ID, span_id: server?.span_id });
  });

  it("keeps concurrent requests' contexts apart across their awaits", async () => {
    const requests = Array.from({ length: 20 }, (_, i) => {
      const trace_id = `${String(i).padStart(2, "0")}${TRACE_ID.slice(2)}`;
      return fetch(`${base}/transfers/t-${i}/steps`, {
        method: "POST",
        headers: { "content-type": "application/json", traceparent: `00-${trace_id}-${SPAN_ID}-01` },
        body: JSON.stringify({ i }),
      }).then(async (response) => ({
        trace_id,
        answer: (await response.json()) as { fields: { trace_id?: string } },
      }));
    });
    for (const { trace_id, answer } of await Promise.all(requests))
      assert.equal(answer.fields.trace_id, trace_id);
  });

  it("marks a 5xx as failed, a 4xx not, and names an unmatched request by its method only", async () => {
    assert.equal((await fetch(`${base}/boom`)).status, 500);
    assert.equal((await fetch(`${base}/no/such/route/42`)).status, 404);
    await tracing.flush();
    const spans = await receiver.waitFor(
      (got) => got.some((s) => s.name === "GET /boom") && got.some((s) => s.name === "GET"),
      WAIT_MS,
    );
    const boom = spans.find((s) => s.name === "GET /boom");
    assert.equal(boom?.status_code, 2);
    assert.equal(boom?.attributes["http.response.status_code"], 500);
    assert.equal(boom?.parent_span_id, "", "no traceparent: a new trace");
    const unmatched = spans.find((s) => s.name === "GET");
    assert.equal(unmatched?.status_code, 0);
    assert.equal(unmatched?.attributes["http.response.status_code"], 404);
    assert.ok(!spans.some((s) => s.name.includes("/no/such/route")), "no URL in a span's name");
  });
});
