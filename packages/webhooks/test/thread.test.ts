// The dispatcher on its worker thread, on a real PostgreSQL: deliveries go out while the main
// thread's event loop is blocked, results reach the main thread, and stop() records the attempts
// in flight. The receiver runs on a worker of its own, so it answers while the main thread is blocked.
import assert from "node:assert/strict";
import { once } from "node:events";
import { after, before, describe, it } from "node:test";
import { Worker } from "node:worker_threads";
import { type Logger, pino } from "pino";
import { type Pool, withTransaction } from "#packages/pg/index.ts";
import type { DeliveryResult } from "../dispatcher.ts";
import { createEndpoint, enqueueEvents } from "../store.ts";
import { type DispatcherThread, startDispatcherThread } from "../thread.ts";
import { freshTables, logger, tablesUrl, until } from "./harness.ts";

/** Answers 204, after delay_ms when the path says `/slow`; posts each arrival's wall-clock time. */
const receiverSource = `
const { parentPort } = require("node:worker_threads");
const http = require("node:http");
const server = http.createServer((req, res) => {
  const at_ms = Date.now();
  req.resume();
  req.on("end", () => {
    parentPort.postMessage({ at_ms, webhook_id: req.headers["webhook-id"] });
    const delay_ms = req.url === "/slow" ? 500 : 0;
    setTimeout(() => res.writeHead(204).end(), delay_ms);
  });
});
server.listen(0, "127.0.0.1", () => parentPort.postMessage({ port: server.address().port }));
parentPort.on("message", () => { server.closeAllConnections(); server.close(); parentPort.close(); });
`;

let pool: Pool;
let receiver: Worker;
let receiverPort: number;
const arrivals = new Map<string, number>();
let nextUser = 1;

before(async () => {
  pool = await freshTables();
  receiver = new Worker(receiverSource, { eval: true });
  const [first] = (await once(receiver, "message")) as [{ port: number }];
  receiverPort = first.port;
  receiver.on("message", (m: { at_ms: number; webhook_id: string }) => arrivals.set(m.webhook_id, m.at_ms));
});
after(async () => {
  receiver.postMessage("close");
  await once(receiver, "exit");
  await pool.end();
});

function startThread(
  results: DeliveryResult[],
  threadLogger: Logger = logger,
  threads = 1,
  idle_poll_ms = 50,
): DispatcherThread {
  return startDispatcherThread({
    threads,
    settings: {
      guard: { allow_private: true },
      attempt_timeout_ms: 5_000,
      concurrency_max: 8,
      endpoint_in_flight_max: 2,
      batch_max: 8,
      idle_poll_ms,
      lease_ms: 10_000,
      retry: { base_ms: 100, cap_ms: 1_000, window_ms: 60_000 },
    },
    database_url: tablesUrl(),
    pool_max: 2,
    service: "webhooks-test",
    log_level: "silent",
    logger: threadLogger,
    on_result: (result) => results.push(result),
  });
}

/** An endpoint of a new user on the receiver's path, and a function that enqueues one event to it. */
async function endpointAt(path: string) {
  const user = nextUser++;
  const url = `http://127.0.0.1:${receiverPort}${path}`;
  await createEndpoint(pool, user, { url, events: ["transfer.completed"] }, { allow_private: true });
  return async (id: string) => {
    const event = { id, type: "transfer.completed" as const, user_ids: [user], data: { transfer_id: id } };
    await withTransaction(pool, (client) => enqueueEvents(client, [event]));
    // The event's id is its webhook-id.
    return id;
  };
}

/** Blocks this thread's event loop (nothing else on it runs) for duration_ms; returns when it ended. */
function blockMainThread(duration_ms: number): number {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, duration_ms);
  return Date.now();
}

describe("the dispatcher thread", () => {
  it("delivers while the main thread's event loop is blocked, and reports each result to it", async () => {
    const results: DeliveryResult[] = [];
    const thread = startThread(results);
    try {
      const enqueue = await endpointAt("/fast");
      // The first delivery waits for the thread's start; the second is the one timed.
      const warm = await enqueue("warm-up");
      thread.wake();
      await until("the warm-up delivery", () => arrivals.has(warm), 30_000);

      const timed = await enqueue("while-blocked");
      thread.wake();
      const unblocked_ms = blockMainThread(2_000);
      await until("the delivery enqueued before the block", () => arrivals.has(timed), 15_000);
      const arrived_ms = arrivals.get(timed) ?? Number.POSITIVE_INFINITY;
      assert.ok(
        arrived_ms < unblocked_ms,
        `arrived ${arrived_ms - unblocked_ms} ms after the main thread was free again: it waited for the main loop`,
      );
      await until("both results on the main thread", () => results.length === 2);
      assert.deepEqual(results, ["delivered", "delivered"]);
    } finally {
      await thread.stop();
    }
  });

  it("two threads share the queue: every delivery sent once, every result reported", async () => {
    const results: DeliveryResult[] = [];
    const thread = startThread(results, logger, 2);
    try {
      const enqueue = await endpointAt("/shared");
      const ids = await Promise.all(Array.from({ length: 40 }, (_, i) => enqueue(`shared-${i}`)));
      thread.wake();
      await until("every delivery arrived", () => ids.every((id) => arrivals.has(id)), 30_000);
      await until("every result on the main thread", () => results.length === 40);
      assert.deepEqual(new Set(results), new Set(["delivered"]));
      const attempts = await pool.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id
          WHERE d.webhook_id = ANY ($1::text[])`,
        [ids],
      );
      assert.equal(attempts.rows[0]?.n, 40, "one attempt per delivery");
    } finally {
      await thread.stop();
    }
  });

  it("a wake posted while another is untaken is skipped, and no wake is lost", async () => {
    // Claims only on wakes: the idle poll is longer than the test.
    const thread = startThread([], logger, 2, 120_000);
    try {
      const enqueue = await endpointAt("/wakes");
      const warm = await enqueue("wakes-warm-up");
      thread.wake(2);
      await until("the warm-up delivery", () => arrivals.has(warm), 30_000);
      for (let round = 0; round < 20; round++) {
        const id = await enqueue(`wakes-${round}`);
        // A burst of wakes, most of them redundant, then nothing until the delivery is seen.
        for (let i = 0; i < 50; i++) thread.wake(1);
        await until(`delivery ${round} on a wake`, () => arrivals.has(id), 5_000);
      }
    } finally {
      await thread.stop();
    }
  });

  it("stop() waits for the attempt in flight and its record", async () => {
    const thread = startThread([]);
    const enqueue = await endpointAt("/slow");
    const id = await enqueue("slow-stop");
    thread.wake();
    await until("the slow delivery sent", () => arrivals.has(id), 30_000);
    await thread.stop();
    const row = await pool.query<{ state: string }>(
      "SELECT state FROM webhook_deliveries WHERE webhook_id = $1",
      [id],
    );
    assert.equal(row.rows[0]?.state, "delivered");
  });

  it("starts a thread that died again, after a backoff", async () => {
    const lines: string[] = [];
    const watching = pino({ level: "error" }, { write: (line: string) => lines.push(line) });
    // A worker copies the environment when it starts: this one dies at its start (a bad collector URL).
    process.env.OTEL_EXPORTER_OTLP_ENDPOINT = "not a url";
    const thread = startThread([], watching);
    try {
      await until("the thread's death logged", () => lines.some((l) => l.includes("starting it again")));
      delete process.env.OTEL_EXPORTER_OTLP_ENDPOINT;
      const enqueue = await endpointAt("/after-restart");
      const id = await enqueue("after-restart");
      await until("a delivery by the thread started again", () => arrivals.has(id), 30_000);
    } finally {
      delete process.env.OTEL_EXPORTER_OTLP_ENDPOINT;
      await thread.stop();
    }
  });
});
