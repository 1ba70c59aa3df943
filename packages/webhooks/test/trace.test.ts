// A delivery continues the trace of what caused its event, with tracing off (no OTLP endpoint in
// this process): the request carries a `traceparent` with that trace id, and the attempt's log
// lines carry trace_id and the transfer's id. Real PostgreSQL (schema webhooks_test) and a real
// receiver on loopback.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { Writable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { pino } from "pino";
import { type Pool, withTransaction } from "#packages/pg/index.ts";
import { contextFromRow } from "#packages/tracing/carriers.ts";
import { startTracing, type Tracing, traceLogMixin, withSpan } from "#packages/tracing/index.ts";
import { type Dispatcher, startDispatcher } from "../dispatcher.ts";
import { createEndpoint, enqueueEvents, enqueueEventsSql, eventsParam, type WebhookEvent } from "../store.ts";
import { freshTables, Receiver, until } from "./harness.ts";

const dev = { allow_private: true };
let pool: Pool;
let receiver: Receiver;
let tracing: Tracing;
const lines: Array<Record<string, unknown>> = [];

before(async () => {
  tracing = await startTracing({ service: "webhooks-trace-test", env: {} });
  assert.equal(tracing.enabled, false);
  pool = await freshTables();
  receiver = await Receiver.start();
});
after(async () => {
  await receiver.close();
  await pool.end();
  await tracing.shutdown();
});

/** A dispatcher whose log lines (debug and up, with the services' mixin) are kept in `lines`. */
function dispatcher(): Dispatcher {
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString("utf8").split("\n").filter(Boolean)) lines.push(JSON.parse(line));
      done();
    },
  });
  return startDispatcher({
    pool,
    logger: pino({ level: "debug", mixin: traceLogMixin }, sink),
    guard: dev,
    attempt_timeout_ms: 5_000,
    concurrency_max: 4,
    endpoint_in_flight_max: 2,
    batch_max: 4,
    idle_poll_ms: 20,
    lease_ms: 10_000,
    retry: { base_ms: 100, cap_ms: 1_000, window_ms: 60_000, random: () => 1 },
  });
}

function newTraceparent(): { trace_id: string; traceparent: string } {
  const trace_id = randomBytes(16).toString("hex");
  return { trace_id, traceparent: `00-${trace_id}-${randomBytes(8).toString("hex")}-01` };
}

/** An event in the shape transaction-service sends for a transfer. */
function transferEvent(user_id: number): { transfer_id: string; event: WebhookEvent } {
  const transfer_id = crypto.randomUUID();
  const event: WebhookEvent = {
    id: `${transfer_id}.completed`,
    type: "transfer.completed",
    user_ids: [user_id],
    data: { transaction: { id: transfer_id, status: "COMPLETED" } },
  };
  return { transfer_id, event };
}

async function deliveredTo(path: string) {
  const d = dispatcher();
  try {
    await until(`a delivery to ${path}`, () => receiver.at(path).length > 0);
  } finally {
    await d.stop();
  }
  return receiver.at(path)[0];
}

describe("webhooks: deliveries continue the trace of their event (tracing off)", () => {
  it("sends the traceparent of the context that enqueued the event, and logs the attempt in that trace", async () => {
    const user = 9_001;
    await createEndpoint(pool, user, { url: receiver.url("/traced"), events: ["transfer.completed"] }, dev);
    const { trace_id, traceparent } = newTraceparent();
    const { transfer_id, event } = transferEvent(user);
    // As a request handler runs: the request's trace is the active context.
    await withSpan("request", { parent: contextFromRow(traceparent) }, () =>
      withTransaction(pool, (client) => enqueueEvents(client, [event])),
    );

    const got = await deliveredTo("/traced");
    const header = String(got?.headers.traceparent ?? "");
    assert.match(header, /^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/, `traceparent header: ${header}`);
    assert.equal(header.split("-")[1], trace_id);
    // The signed headers are still there: the trace header is an addition.
    assert.equal(got?.headers["webhook-id"], event.id);

    const attempt = lines.find((l) => l.msg === "webhook attempt" && l.transfer_id === transfer_id);
    assert.ok(attempt, `a log line of the attempt: ${JSON.stringify(lines)}`);
    assert.equal(attempt.trace_id, trace_id);
    assert.equal(attempt.result, "delivered");
  });

  it("sends the traceparent a transition statement copies from the row its event is about", async () => {
    const user = 9_002;
    await createEndpoint(pool, user, { url: receiver.url("/copied"), events: ["transfer.completed"] }, dev);
    const { trace_id, traceparent } = newTraceparent();
    const { transfer_id, event } = transferEvent(user);
    await pool.query("CREATE TABLE traced_rows (id uuid PRIMARY KEY, traceparent text)");
    await pool.query("INSERT INTO traced_rows VALUES ($1, $2)", [transfer_id, traceparent]);
    // No active context here: only the row holds the trace.
    const copied =
      "(SELECT r.traceparent FROM traced_rows r WHERE r.id = (ev.data->'transaction'->>'id')::uuid)";
    await pool.query(enqueueEventsSql("$1", "true", copied), [eventsParam([event])]);

    const got = await deliveredTo("/copied");
    assert.equal(String(got?.headers.traceparent ?? "").split("-")[1], trace_id);
  });

  it("sends no traceparent for a delivery that has no trace", async () => {
    const user = 9_003;
    await createEndpoint(pool, user, { url: receiver.url("/untraced"), events: ["transfer.completed"] }, dev);
    await withTransaction(pool, (client) => enqueueEvents(client, [transferEvent(user).event]));
    const got = await deliveredTo("/untraced");
    assert.equal(got?.headers.traceparent, undefined);
  });
});
