/**
 * Tracing across processes: this test file is one service (the public entry) and peer.ts, a
 * child process, another (the ledger and the record writer). A transfer's context travels by
 * HTTP headers, an outbox row in PostgreSQL and Kafka headers on the test broker, there and
 * back; the OTLP receiver gets every span in one trace, with the right parents and services.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { once } from "node:events";
import { createInterface } from "node:readline";
import { after, before, describe, it } from "node:test";
import { trace } from "@opentelemetry/api";
import pg from "pg";
import { pino } from "pino";
import { createHttpServer } from "#packages/http/server.ts";
import { withTimeout } from "#packages/runtime/index.ts";
import {
  contextFromKafkaHeaders,
  contextFromRow,
  extractHttpHeaders,
  injectHttpHeaders,
  injectKafkaHeaders,
  rowFromContext,
  startTracing,
  type Tracing,
  withSpan,
} from "../index.ts";
import { consumeEach, createTopics, type TextMessage, textProducer, topicName } from "./kafka.ts";
import { OtlpKind, type OtlpReceiver, type ReceivedSpan, startOtlpReceiver } from "./otlp-receiver.ts";

const FRONT = "trace-test-entry";
const WRITER = "trace-test-writer";
const WAIT_MS = 60_000;

/** A client's own trace: the entry must continue it, not start another. */
const CLIENT_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN_ID = "00f067aa0ba902b7";

interface Peer {
  child: ChildProcess;
  url: string;
  /** Its log lines so far, parsed. */
  logs: Array<Record<string, unknown>>;
}

async function startPeer(env: NodeJS.ProcessEnv): Promise<Peer> {
  const child = spawn(process.execPath, [new URL("./peer.ts", import.meta.url).pathname], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const logs: Array<Record<string, unknown>> = [];
  const lines = createInterface({ input: child.stdout as NonNullable<typeof child.stdout> });
  const ready = new Promise<string>((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`peer exited with ${code} before it was ready`)));
    lines.on("line", (line) => {
      const match = /^ready (\d+)$/.exec(line);
      if (match !== null) resolve(`http://127.0.0.1:${match[1]}`);
      else if (line.startsWith("{")) logs.push(JSON.parse(line) as Record<string, unknown>);
    });
  });
  return { child, logs, url: await withTimeout(ready, WAIT_MS, "peer start") };
}

function byName(spans: ReceivedSpan[], name: string): ReceivedSpan {
  const found = spans.filter((s) => s.name === name);
  assert.equal(found.length, 1, `exactly one span "${name}" (of ${spans.map((s) => s.name).join(", ")})`);
  return found[0] as ReceivedSpan;
}

describe("tracing: one transfer's spans from two services share one trace", () => {
  let receiver: OtlpReceiver;
  let tracing: Tracing;
  let peer: Peer;
  let db: pg.Client;
  const commands = topicName("commands");
  const events = topicName("events");

  before(async () => {
    receiver = await startOtlpReceiver();
    tracing = await startTracing({
      service: FRONT,
      env: { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url },
      batch_delay_ms: 100,
    });
    assert.equal(tracing.enabled, true);
    await createTopics([commands, events]);
    peer = await startPeer({
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
      TRACE_COMMANDS_TOPIC: commands,
      TRACE_EVENTS_TOPIC: events,
      LOG_LEVEL: "info",
    });
    db = new pg.Client({
      connectionString: process.env.TEST_SAGA_DATABASE_URL ?? "postgres://dps:dps@127.0.0.1:55432/dps_saga",
    });
    await db.connect();
    // The outbox's shape, as far as tracing is concerned: the row carries its trace context.
    await db.query("CREATE TEMP TABLE trace_outbox (transfer_id text PRIMARY KEY, traceparent text)");
  });

  after(async () => {
    if (peer?.child.exitCode === null) peer.child.kill("SIGKILL");
    await db?.end();
    await tracing?.shutdown();
    await receiver?.close();
  });

  it("carries a client's traceparent through HTTP, an outbox row and Kafka, there and back", async () => {
    const transfer_id = randomUUID();
    // The entry service: the public request, the ledger call, the outbox row in one commit.
    const entry = createHttpServer({ logger: pino({ level: "silent" }) });
    entry.post("/transactions/transfer", async (request) => {
      const parent = extractHttpHeaders(request.headers);
      return withSpan("POST /transactions/transfer", { kind: "server", parent }, async () => {
        await withSpan("ledger debit call", { kind: "client", attributes: { transfer_id } }, async () => {
          const response = await fetch(`${peer.url}/ledger/debit`, {
            method: "POST",
            headers: injectHttpHeaders({ "content-type": "application/json" }),
            body: JSON.stringify({ transfer_id }),
            signal: AbortSignal.timeout(10_000),
          });
          assert.equal(response.status, 200);
        });
        await withSpan("outbox write", { attributes: { transfer_id } }, async () => {
          await db.query("INSERT INTO trace_outbox VALUES ($1, $2)", [transfer_id, rowFromContext()]);
        });
        return { id: transfer_id, status: "PENDING" };
      });
    });
    await entry.listen({ host: "127.0.0.1", port: 0 });

    // The entry service's consumer of the events that come back.
    let applied: (message: TextMessage) => void = () => {};
    const eventBack = new Promise<TextMessage>((resolve) => {
      applied = resolve;
    });
    const consumer = await consumeEach(events, "trace-test-entry", async (message) => {
      const parent = contextFromKafkaHeaders(message.headers);
      await withSpan("event applied", { kind: "consumer", parent, attributes: { transfer_id } }, async () => {
        applied(message);
      });
    });
    const producer = textProducer("trace-test-entry");
    try {
      const response = await entry.inject({
        method: "POST",
        url: "/transactions/transfer",
        headers: {
          "content-type": "application/json",
          traceparent: `00-${CLIENT_TRACE_ID}-${CLIENT_SPAN_ID}-01`,
        },
        payload: {},
      });
      assert.equal(response.statusCode, 200, response.body);
      // No span is active here, as in the relay that sends the outbox later: only the row knows the trace.
      assert.equal(trace.getActiveSpan(), undefined);
      const row = await db.query<{ traceparent: string | null }>(
        "SELECT traceparent FROM trace_outbox WHERE transfer_id = $1",
        [transfer_id],
      );
      const parent = contextFromRow(row.rows[0]?.traceparent);
      await withSpan("outbox relay", { kind: "producer", parent, attributes: { transfer_id } }, async () => {
        const value = JSON.stringify({ type: "RecordCommand", transfer_id });
        await producer.send({
          messages: [{ topic: commands, key: transfer_id, value, headers: injectKafkaHeaders() }],
        });
      });
      const back = await withTimeout(eventBack, WAIT_MS, "the event back");
      assert.equal(back.key, transfer_id);
    } finally {
      await consumer.close();
      await producer.close();
      await entry.close();
    }

    // The peer exports on SIGTERM; this process flushes.
    peer.child.kill("SIGTERM");
    const [code] = (await withTimeout(once(peer.child, "exit"), WAIT_MS, "peer exit")) as [number | null];
    assert.equal(code, 0);
    await tracing.flush();
    const names = [
      "POST /transactions/transfer",
      "ledger debit call",
      "ledger debit",
      "outbox write",
      "outbox relay",
      "record write",
      "record event",
      "event applied",
    ];
    const spans = await receiver.waitFor((got) => names.every((n) => got.some((s) => s.name === n)), WAIT_MS);
    assert.equal(receiver.refused, 0);

    const span = (name: string) => byName(spans, name);
    const expect = (name: string, service: string, kind: number, parent_span_id: string) => {
      const s = span(name);
      assert.equal(s.trace_id, CLIENT_TRACE_ID, `${name}: the client's trace`);
      assert.equal(s.service, service, `${name}: service`);
      assert.equal(s.kind, kind, `${name}: kind`);
      assert.equal(s.parent_span_id, parent_span_id, `${name}: parent`);
    };
    expect("POST /transactions/transfer", FRONT, OtlpKind.server, CLIENT_SPAN_ID);
    const request = span("POST /transactions/transfer").span_id;
    expect("ledger debit call", FRONT, OtlpKind.client, request);
    expect("ledger debit", WRITER, OtlpKind.server, span("ledger debit call").span_id);
    expect("outbox write", FRONT, OtlpKind.internal, request);
    expect("outbox relay", FRONT, OtlpKind.producer, span("outbox write").span_id);
    expect("record write", WRITER, OtlpKind.consumer, span("outbox relay").span_id);
    expect("record event", WRITER, OtlpKind.producer, span("record write").span_id);
    expect("event applied", FRONT, OtlpKind.consumer, span("record event").span_id);
    assert.equal(span("record write").attributes.transfer_id, transfer_id);
    // Each process names its copy: host and pid.
    assert.match(
      String(span("ledger debit").resource["service.instance.id"]),
      new RegExp(`/${peer.child.pid}$`),
    );
    assert.match(
      String(span("outbox write").resource["service.instance.id"]),
      new RegExp(`/${process.pid}$`),
    );

    // The peer's log lines about the transfer carry the trace and the span they were written in.
    const debited = peer.logs.find((line) => line.msg === "debited");
    assert.deepEqual(
      { trace_id: debited?.trace_id, span_id: debited?.span_id, transfer_id: debited?.transfer_id },
      { trace_id: CLIENT_TRACE_ID, span_id: span("ledger debit").span_id, transfer_id },
    );
    const written = peer.logs.find((line) => line.msg === "record written");
    assert.equal(written?.trace_id, CLIENT_TRACE_ID);
    assert.equal(written?.span_id, span("record write").span_id);
  });
});
