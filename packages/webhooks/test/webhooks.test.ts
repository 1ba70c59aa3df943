// Webhooks end to end on a real PostgreSQL (the saga's test database, schema webhooks_test) and a
// real HTTP receiver on loopback that checks every signature with the Standard Webhooks library.
import assert from "node:assert/strict";
import { createHook } from "node:async_hooks";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Webhook } from "standardwebhooks";
import type { ApiError } from "#packages/http/errors.ts";
import { type Pool, withTransaction } from "#packages/pg/index.ts";
import type { Resolver } from "../address-guard.ts";
import { claim, type Dispatcher, type DispatcherOptions, startDispatcher } from "../dispatcher.ts";
import {
  createEndpoint,
  deleteEndpoint,
  deliveryViewSchema,
  endpointSchema,
  enqueueEvents,
  enqueueEventsSql,
  eventsParam,
  listDeliveries,
  listEndpoints,
  pruneDeliveries,
  redeliver,
  rotateSecret,
  type WebhookEvent,
} from "../store.ts";
import { freshTables, logger, type Received, Receiver, tablesUrl, until } from "./harness.ts";

let pool: Pool;
let receiver: Receiver;
let nextUser = 1;
const dev = { allow_private: true };

before(async () => {
  pool = await freshTables();
  receiver = await Receiver.start();
});
after(async () => {
  await receiver.close();
  await pool.end();
});

function dispatcher(overrides: Partial<DispatcherOptions> = {}): Dispatcher {
  return startDispatcher({
    pool,
    logger,
    guard: dev,
    attempt_timeout_ms: 5_000,
    concurrency_max: 8,
    endpoint_in_flight_max: 2,
    batch_max: 8,
    idle_poll_ms: 20,
    lease_ms: 10_000,
    retry: { base_ms: 100, cap_ms: 1_000, window_ms: 60_000, random: () => 1 },
    ...overrides,
  });
}

async function endpoint(path: string, events: WebhookEvent["type"][] = ["transfer.completed"]) {
  const user = nextUser++;
  const { endpoint, secret } = await createEndpoint(pool, user, { url: receiver.url(path), events }, dev);
  return { user, id: endpoint.id, secret };
}

function transferEvent(id: string, user_ids: number[], type: WebhookEvent["type"] = "transfer.completed") {
  return {
    id,
    type,
    user_ids,
    data: { transfer_id: id, status: type === "transfer.failed" ? "FAILED" : "COMPLETED" },
  };
}

async function enqueue(events: WebhookEvent[]): Promise<number> {
  return withTransaction(pool, (client) => enqueueEvents(client, events));
}

/** The Standard Webhooks library's own check, as a receiver runs it; returns the parsed body. */
function verified(
  got: Received,
  secret: string,
): { type: string; timestamp: string; data: Record<string, unknown> } {
  return new Webhook(secret).verify(got.body, got.headers as Record<string, string>) as never;
}

interface PlanNode {
  "Relation Name"?: string;
  "Actual Rows": number;
  "Actual Loops": number;
  "Rows Removed by Filter"?: number;
  Plans?: PlanNode[];
}

/** Rows of webhook_deliveries a plan's scans read, those its filters dropped included. */
function deliveryRowsRead(node: PlanNode): number {
  const own =
    node["Relation Name"] === "webhook_deliveries"
      ? (node["Actual Rows"] + (node["Rows Removed by Filter"] ?? 0)) * node["Actual Loops"]
      : 0;
  return own + (node.Plans ?? []).reduce((sum, child) => sum + deliveryRowsRead(child), 0);
}

/** A claim as the dispatcher runs it, under EXPLAIN ANALYZE and rolled back: what it reads, what it takes. */
async function explainedClaim(
  options: DispatcherOptions,
  room: number,
  inFlight: Map<string, number>,
  endpoint_ids: string[],
) {
  return withTransaction(pool, async (client) => {
    let plan: PlanNode | undefined;
    const explaining = {
      query: async ({ text, values }: { text: string; values: unknown[] }) => {
        const explained = await client.query(`EXPLAIN (ANALYZE, FORMAT JSON) ${text}`, values);
        plan = explained.rows[0]["QUERY PLAN"][0].Plan;
        return { rows: [] };
      },
    };
    await claim({ ...options, pool: explaining as unknown as Pool }, room, inFlight);
    const taken = await client.query<{ url: string }>(
      `SELECT e.url FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
        WHERE d.claim_token IS NOT NULL AND d.state = 'pending' AND d.endpoint_id = ANY ($1::uuid[])
        ORDER BY e.url`,
      [endpoint_ids],
    );
    await client.query("ROLLBACK AND CHAIN");
    return {
      rows_read: plan === undefined ? 0 : deliveryRowsRead(plan),
      paths: taken.rows.map((r) => new URL(r.url).pathname),
    };
  });
}

async function deliveriesOf(ep: { user: number; id: string }) {
  return (await listDeliveries(pool, ep.user, ep.id)).deliveries;
}

async function deliveryState(webhook_id: string) {
  const rows = await pool.query<{ state: string; attempts: number }>(
    "SELECT state, attempts FROM webhook_deliveries WHERE webhook_id = $1",
    [webhook_id],
  );
  return rows.rows;
}

describe("webhooks: enqueue in the caller's transaction", () => {
  it("sends nothing for a rolled-back transaction, and a committed event once, signed, to every subscriber", async () => {
    const payer = await endpoint("/tx/payer", ["transfer.completed", "transfer.failed"]);
    const payee = await endpoint("/tx/payee");
    const unsubscribed = await endpoint("/tx/other", ["disbursement.completed"]);
    const client = await pool.connect();
    try {
      await client.query("BEGIN");
      assert.equal(
        await enqueueEvents(client, [transferEvent("evt_rolled_back", [payer.user, payee.user])]),
        2,
      );
      await client.query("ROLLBACK");
    } finally {
      client.release();
    }
    assert.equal(await enqueue([transferEvent("evt_committed", [payer.user, payee.user])]), 2);
    // The same event again (a retried transition) is not enqueued twice.
    assert.equal(await enqueue([transferEvent("evt_committed", [payer.user, payee.user])]), 0);
    assert.equal(await enqueue([transferEvent("evt_other_user", [unsubscribed.user])]), 0);

    const d = dispatcher();
    try {
      await until("both deliveries", async () =>
        (await deliveryState("evt_committed")).every((r) => r.state === "delivered"),
      );
      await sleep(300);
    } finally {
      await d.stop();
    }
    const sent = [...receiver.at("/tx/payer"), ...receiver.at("/tx/payee"), ...receiver.at("/tx/other")];
    assert.deepEqual(
      sent.map((r) => r.headers["webhook-id"]),
      ["evt_committed", "evt_committed"],
    );
    const body = verified(receiver.at("/tx/payer")[0] as Received, payer.secret);
    assert.equal(body.type, "transfer.completed");
    assert.deepEqual(body.data, { transfer_id: "evt_committed", status: "COMPLETED" });
    assert.match(body.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
    verified(receiver.at("/tx/payee")[0] as Received, payee.secret);
    assert.throws(
      () => verified(receiver.at("/tx/payee")[0] as Received, payer.secret),
      /No matching signature/,
    );
  });
});

describe("webhooks: gathering enqueues", () => {
  it("with gather_ms, enqueues that wake it within the gather are claimed together after it; a stop meanwhile claims nothing", async () => {
    const payer = await endpoint("/gather");
    const d = dispatcher({ gather_ms: 400, idle_poll_ms: 60_000 });
    let stopped = false;
    try {
      await sleep(100); // the first, empty claim; then the idle wait
      assert.equal(await enqueue([transferEvent("evt_gather_1", [payer.user])]), 1);
      d.wake();
      await sleep(150);
      assert.equal(await enqueue([transferEvent("evt_gather_2", [payer.user])]), 1);
      d.wake();
      await sleep(100);
      assert.equal(receiver.at("/gather").length, 0, "nothing is claimed while the wake's company gathers");
      await until("both deliveries", () => receiver.at("/gather").length === 2);

      assert.equal(await enqueue([transferEvent("evt_gather_3", [payer.user])]), 1);
      d.wake();
      await sleep(50);
      await d.stop();
      stopped = true;
      assert.deepEqual(
        (await deliveryState("evt_gather_3")).map((r) => [r.state, r.attempts]),
        [["pending", 0]],
        "stopped while gathering: not claimed, left for the next dispatcher",
      );
    } finally {
      if (!stopped) await d.stop();
    }
  });
});

describe("webhooks: bounded events", () => {
  it("refuses an event whose data is over the bound, by name, and enqueues nothing of the call", async () => {
    const ep = await endpoint("/big");
    const big = { ...transferEvent("evt_big", [ep.user]), data: { blob: "x".repeat(61 * 1024) } };
    await assert.rejects(
      enqueue([transferEvent("evt_small", [ep.user]), big]),
      /evt_big has more than 61440 bytes/,
    );
    assert.deepEqual(await deliveryState("evt_small"), []);
    await deleteEndpoint(pool, ep.user, ep.id);
  });
});

describe("webhooks: enqueue inside a state transition statement", () => {
  it("enqueues only the events of the rows the statement really moved", async () => {
    const ep = await endpoint("/gated", ["transfer.completed", "transfer.failed"]);
    await pool.query("CREATE TABLE IF NOT EXISTS gate_test (id text PRIMARY KEY, state text NOT NULL)");
    await pool.query("INSERT INTO gate_test VALUES ('t1', 'posted'), ('t2', 'completed')");
    const events = [transferEvent("evt_gate_t1", [ep.user]), transferEvent("evt_gate_t2", [ep.user])].map(
      (e, i) => ({
        ...e,
        data: { transfer_id: `t${i + 1}` },
      }),
    );
    // A compare-and-set from posted to completed: t2 is already completed, so only t1 moves.
    await pool.query(
      `WITH moved AS (
         UPDATE gate_test SET state = 'completed' WHERE id = ANY ($1::text[]) AND state = 'posted' RETURNING id),
       hooks AS (${enqueueEventsSql("$2", "ev.data->>'transfer_id' IN (SELECT id FROM moved)")})
       SELECT count(*) FROM moved`,
      [["t1", "t2"], eventsParam(events)],
    );
    const rows = await pool.query<{ webhook_id: string }>(
      "SELECT webhook_id FROM webhook_deliveries WHERE endpoint_id = $1",
      [ep.id],
    );
    assert.deepEqual(
      rows.rows.map((r) => r.webhook_id),
      ["evt_gate_t1"],
    );
    await deleteEndpoint(pool, ep.user, ep.id);
  });
});

describe("webhooks: retries", () => {
  it("retries a failing receiver with growing delays, logging every attempt", async () => {
    const ep = await endpoint("/flaky");
    receiver.on("/flaky", (n) => ({ status: n <= 3 ? 500 : 200 }));
    await enqueue([transferEvent("evt_flaky", [ep.user])]);
    const d = dispatcher();
    try {
      await until(
        "the fourth attempt to succeed",
        async () => (await deliveryState("evt_flaky"))[0]?.state === "delivered",
      );
    } finally {
      await d.stop();
    }
    const got = receiver.at("/flaky");
    assert.equal(got.length, 4);
    for (const r of got) {
      assert.equal(r.headers["webhook-id"], "evt_flaky");
      verified(r, ep.secret);
    }
    // With the random part pinned to its top, the delays are 100, 200 and 400 ms.
    const gaps = got.slice(1).map((r, i) => r.at_ms - (got[i] as Received).at_ms);
    [100, 200, 400].forEach((expected, i) => {
      assert.ok((gaps[i] as number) >= expected * 0.9, `gap ${i} is ${gaps[i]} ms, expected >= ${expected}`);
    });
    assert.ok((gaps[2] as number) > (gaps[0] as number), `gaps grow: ${gaps.join(", ")}`);

    const [delivery] = await deliveriesOf(ep);
    assert.equal(delivery?.state, "delivered");
    assert.deepEqual(
      delivery?.attempts.map((a) => [a.attempt, a.status, a.response_code]),
      [
        [1, "failed", 500],
        [2, "failed", 500],
        [3, "failed", 500],
        [4, "succeeded", 200],
      ],
    );
    for (const a of delivery?.attempts ?? []) assert.ok(a.latency_ms >= 0 && a.latency_ms < 5_000);
  });

  it("marks the endpoint failing once the retry window is spent; a redelivery sends again", async () => {
    const ep = await endpoint("/dead");
    let up = false;
    receiver.on("/dead", () => ({ status: up ? 200 : 503 }));
    await enqueue([transferEvent("evt_dead", [ep.user])]);
    const d = dispatcher({ retry: { base_ms: 50, cap_ms: 100, window_ms: 400, random: () => 1 } });
    try {
      await until(
        "the delivery to fail",
        async () => (await deliveryState("evt_dead"))[0]?.state === "failed",
      );
      const [listed] = await listEndpoints(pool, ep.user);
      assert.equal(listed?.state, "failing");
      // A failing endpoint gets no new events.
      assert.equal(await enqueue([transferEvent("evt_dead_2", [ep.user])]), 0);
      const attempts = receiver.at("/dead").length;
      assert.ok(attempts >= 2, `retried before giving up (${attempts} attempts)`);

      up = true;
      const [delivery] = await deliveriesOf(ep);
      await redeliver(pool, ep.user, ep.id, delivery?.id as string);
      d.wake();
      await until("the redelivery", async () => (await deliveryState("evt_dead"))[0]?.state === "delivered");
      assert.equal(receiver.at("/dead").at(-1)?.headers["webhook-id"], "evt_dead");
      assert.equal((await listEndpoints(pool, ep.user))[0]?.state, "enabled");
    } finally {
      await d.stop();
    }
    await assert.rejects(redeliver(pool, ep.user + 1_000, ep.id, "00000000-0000-0000-0000-000000000000"), {
      status: 404,
    } as Partial<ApiError>);
  });
});

describe("webhooks: isolation and crashes", () => {
  it("a slow endpoint does not delay deliveries to another", async () => {
    const slow = await endpoint("/slow");
    const fast = await endpoint("/fast");
    receiver.on("/slow", () => ({ status: 200, delay_ms: 4_000 }));
    await enqueue(Array.from({ length: 12 }, (_, i) => transferEvent(`evt_slow_${i}`, [slow.user])));
    await sleep(20); // the fast endpoint's event is the newest: behind all the slow ones in the queue
    await enqueue([transferEvent("evt_fast", [fast.user])]);
    const started = performance.now();
    const d = dispatcher({ concurrency_max: 4, batch_max: 4, endpoint_in_flight_max: 2 });
    try {
      await until("the fast delivery", () => receiver.at("/fast").length === 1);
      const waited_ms = performance.now() - started;
      assert.ok(waited_ms < 2_500, `the fast endpoint waited ${Math.round(waited_ms)} ms`);
      assert.equal(receiver.answered.filter((r) => r.path === "/slow").length, 0, "no slow answer yet");
      assert.ok(receiver.at("/slow").length <= 2, "at most two requests in flight to the slow endpoint");
    } finally {
      // Its remaining deliveries would keep the next tests' dispatchers busy.
      await deleteEndpoint(pool, slow.user, slow.id);
      await d.stop();
    }
  });

  it("a backlog of one endpoint at its limit does not delay another endpoint, and the limit holds", async () => {
    const big = await endpoint("/backlog");
    const small = await endpoint("/beside-backlog");
    receiver.on("/backlog", () => ({ status: 200, delay_ms: 4_000 }));
    // Far more due rows than a claim's window (4 per row of room): the window holds only them.
    await enqueue(Array.from({ length: 300 }, (_, i) => transferEvent(`evt_backlog_${i}`, [big.user])));
    await sleep(20); // the other endpoint's event is the newest: behind the whole backlog
    await enqueue([transferEvent("evt_beside_backlog", [small.user])]);
    const started = performance.now();
    const d = dispatcher({ concurrency_max: 4, batch_max: 4, endpoint_in_flight_max: 2 });
    try {
      await until("the other endpoint's delivery", () => receiver.at("/beside-backlog").length === 1);
      const waited_ms = performance.now() - started;
      assert.ok(waited_ms < 2_500, `the other endpoint waited ${Math.round(waited_ms)} ms`);
      await sleep(300);
      assert.equal(receiver.answered.filter((r) => r.path === "/backlog").length, 0, "no backlog answer yet");
      assert.equal(receiver.at("/backlog").length, 2, "two requests in flight to the backlogged endpoint");
    } finally {
      await deleteEndpoint(pool, big.user, big.id);
      await d.stop();
    }
  });

  it("a claim reads about as many rows with 2,000 rows due on an endpoint at its limit as with 200", async () => {
    const heavy = await endpoint("/heavy");
    const light = await Promise.all([1, 2, 3].map((n) => endpoint(`/light-${n}`)));
    const backlog = (from: number, count: number) =>
      Array.from({ length: count }, (_, i) => transferEvent(`evt_heavy_${from + i}`, [heavy.user]));
    await enqueue(backlog(0, 200));
    await sleep(20);
    await enqueue(light.map((ep, i) => transferEvent(`evt_light_${i}`, [ep.user])));
    const options = { endpoint_in_flight_max: 2, lease_ms: 10_000 } as DispatcherOptions;
    // Statistics, as a running system's table has (a table never analyzed gets guessed plans).
    await pool.query("ANALYZE webhook_deliveries");
    const full = new Map([[heavy.id, 2]]);
    const ids = [heavy.id, ...light.map((ep) => ep.id)];
    try {
      const small = await explainedClaim(options, 8, full, ids);
      assert.deepEqual(small.paths, ["/light-1", "/light-2", "/light-3"]);
      for (let from = 200; from < 2_000; from += 600) await enqueue(backlog(from, 600));
      await pool.query("ANALYZE webhook_deliveries");
      const large = await explainedClaim(options, 8, full, ids);
      assert.deepEqual(large.paths, ["/light-1", "/light-2", "/light-3"]);
      assert.ok(
        large.rows_read < small.rows_read * 1.5 + 50,
        `${large.rows_read} rows read with 2,000 rows due, ${small.rows_read} with 200`,
      );
    } finally {
      await deleteEndpoint(pool, heavy.user, heavy.id);
      for (const ep of light) await deleteEndpoint(pool, ep.user, ep.id);
    }
  });

  // The statistics a running system's table has between bursts: an ANALYZE that found no pending
  // row (every delivery delivered), then a burst, then a VACUUM (autovacuum's, after so many
  // inserts) that marks the burst's pages all-visible, so an index-only scan looks cheapest.
  it("a burst after an ANALYZE that saw no pending row, then a VACUUM, is claimed endpoint by endpoint, not by reading every due row", async () => {
    const eps = await Promise.all(Array.from({ length: 20 }, (_, n) => endpoint(`/burst-${n}`)));
    const events = (round: string, per_endpoint: number) =>
      eps.flatMap((ep, e) =>
        Array.from({ length: per_endpoint }, (_, i) => transferEvent(`evt_${round}_${e}_${i}`, [ep.user])),
      );
    const ids = eps.map((ep) => ep.id);
    try {
      // Between bursts every delivery is delivered: that is what the statistics see.
      await pool.query("UPDATE webhook_deliveries SET state = 'delivered' WHERE state = 'pending'");
      await enqueue(events("quiet", 50));
      await pool.query(
        "UPDATE webhook_deliveries SET state = 'delivered' WHERE endpoint_id = ANY ($1::uuid[])",
        [ids],
      );
      await pool.query("ANALYZE webhook_deliveries");
      for (const half of [events("burst", 100).slice(0, 1_000), events("burst", 100).slice(1_000)])
        await enqueue(half);
      await pool.query("VACUUM webhook_deliveries");
      const options = { endpoint_in_flight_max: 2, lease_ms: 10_000 } as DispatcherOptions;
      const claimed = await explainedClaim(options, 16, new Map(), ids);
      assert.equal(claimed.paths.length, 16);
      // 2,000 rows due: the window reads 64 of them, then each of 8 endpoints its own 2.
      assert.ok(claimed.rows_read < 400, `${claimed.rows_read} rows read to claim 16 of 2,000 due rows`);
    } finally {
      for (const ep of eps) await deleteEndpoint(pool, ep.user, ep.id);
    }
  });

  it("leases only the deliveries it has room to send", async () => {
    const eps = await Promise.all(["/room-a", "/room-b", "/room-c"].map((path) => endpoint(path)));
    await enqueue(eps.flatMap((ep, i) => [0, 1].map((n) => transferEvent(`evt_room_${i}_${n}`, [ep.user]))));
    const started = performance.now();
    // One request at a time: a lease taken beyond that room would hold its row for lease_ms.
    const d = dispatcher({ concurrency_max: 1, batch_max: 1, lease_ms: 20_000 });
    try {
      await until(
        "every delivery",
        () => eps.every((_, i) => receiver.at(["/room-a", "/room-b", "/room-c"][i] as string).length === 2),
        10_000,
      );
    } finally {
      await d.stop();
    }
    assert.ok(performance.now() - started < 5_000, `took ${Math.round(performance.now() - started)} ms`);
  });

  it("pending deliveries of an endpoint marked failing do not hold up other endpoints", async () => {
    const stuck = await endpoint("/stuck");
    const other = await endpoint("/after-stuck");
    await enqueue(Array.from({ length: 40 }, (_, i) => transferEvent(`evt_stuck_${i}`, [stuck.user])));
    // As when another delivery of the endpoint ran out of retries while these were in flight.
    await pool.query("UPDATE webhook_endpoints SET state = 'failing', failing_since = now() WHERE id = $1", [
      stuck.id,
    ]);
    await sleep(20);
    await enqueue([transferEvent("evt_after_stuck", [other.user])]);
    const d = dispatcher({ concurrency_max: 2, batch_max: 2 });
    try {
      await until("the other endpoint's delivery", () => receiver.at("/after-stuck").length === 1, 5_000);
    } finally {
      await d.stop();
    }
    assert.equal(receiver.at("/stuck").length, 0);
  });

  it("a dispatcher that dies between send and record leaves the delivery to be sent again, same webhook-id", async () => {
    const ep = await endpoint("/crash");
    await enqueue([transferEvent("evt_crash", [ep.user])]);
    const dying = dispatcher({
      attempt_timeout_ms: 1_000,
      lease_ms: 1_500,
      after_send: () => {
        throw new Error("killed before recording");
      },
    });
    try {
      await until("the first send", () => receiver.at("/crash").length === 1);
    } finally {
      await dying.stop();
    }
    // The process is gone: nothing was recorded, the row is only leased.
    assert.deepEqual(await deliveryState("evt_crash"), [{ state: "pending", attempts: 1 }]);
    assert.equal((await deliveriesOf(ep))[0]?.attempts.length, 0);

    const survivor = dispatcher({ attempt_timeout_ms: 1_000, lease_ms: 1_500 });
    try {
      await until("the redelivery", async () => (await deliveryState("evt_crash"))[0]?.state === "delivered");
    } finally {
      await survivor.stop();
    }
    const got = receiver.at("/crash");
    assert.equal(got.length, 2);
    for (const r of got) {
      assert.equal(r.headers["webhook-id"], "evt_crash");
      verified(r, ep.secret);
    }
  });
});

describe("webhooks: recording", () => {
  it("records attempts that are answered together in a few statements, each one logged", async () => {
    const ep = await endpoint("/together");
    const ids = Array.from({ length: 8 }, (_, i) => `evt_together_${i}`);
    await enqueue(ids.map((id) => transferEvent(id, [ep.user])));
    // Every request is answered at the same instant, however they arrived.
    const answer_at = performance.now() + 1_000;
    receiver.on("/together", () => ({ status: 204, delay_ms: Math.max(0, answer_at - performance.now()) }));
    let statements = 0;
    const counting = new Proxy(pool, {
      get(target, key) {
        if (key === "query") {
          return (query: string | { text: string; values: unknown[] }, values?: unknown[]) => {
            if (typeof query === "string" && query.includes("'succeeded'")) statements += 1;
            return target.query(query as string, values);
          };
        }
        const value = Reflect.get(target, key);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    const d = dispatcher({ pool: counting, concurrency_max: 8, batch_max: 8, endpoint_in_flight_max: 8 });
    try {
      await until("every delivery", async () => {
        const rows = await pool.query(
          "SELECT 1 FROM webhook_deliveries WHERE endpoint_id = $1 AND state = 'delivered'",
          [ep.id],
        );
        return rows.rowCount === ids.length;
      });
    } finally {
      await d.stop();
    }
    assert.ok(statements <= 3, `${statements} statements recorded ${ids.length} delivered attempts`);
    const deliveries = await deliveriesOf(ep);
    assert.equal(deliveries.length, ids.length);
    for (const delivery of deliveries) {
      assert.deepEqual(
        delivery.attempts.map((a) => [a.attempt, a.status, a.response_code]),
        [[1, "succeeded", 204]],
      );
    }
  });
});

describe("webhooks: an endpoint's slot", () => {
  it("is free again at a 2xx answer, before the attempt is recorded", async () => {
    const ep = await endpoint("/slot");
    await enqueue(["evt_slot_0", "evt_slot_1"].map((id) => transferEvent(id, [ep.user])));
    // Every delivered attempt takes 2 s to record: the second request must not wait for it.
    const slowRecords = new Proxy(pool, {
      get(target, key) {
        if (key === "query") {
          return async (query: string | { text: string; values: unknown[] }, values?: unknown[]) => {
            if (typeof query === "string" && query.includes("'succeeded'")) await sleep(2_000);
            return target.query(query as string, values);
          };
        }
        const value = Reflect.get(target, key);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    const d = dispatcher({ pool: slowRecords, endpoint_in_flight_max: 1 });
    try {
      await until("both requests", () => receiver.at("/slot").length === 2);
      const [first, second] = receiver.at("/slot") as [Received, Received];
      assert.ok(second.at_ms - first.at_ms < 1_500, `${second.at_ms - first.at_ms} ms between the requests`);
    } finally {
      await d.stop();
    }
  });

  it("a busy endpoint's rows are leased ahead: a claim every few answers, never more in flight than its limit", async () => {
    const ep = await endpoint("/ahead");
    let in_flight = 0;
    let in_flight_max = 0;
    receiver.on("/ahead", () => {
      in_flight += 1;
      in_flight_max = Math.max(in_flight_max, in_flight);
      setTimeout(() => {
        in_flight -= 1;
      }, 20);
      return { status: 200, delay_ms: 20 };
    });
    await enqueue(Array.from({ length: 120 }, (_, i) => transferEvent(`evt_ahead_${i}`, [ep.user])));
    let claims = 0;
    const counting = new Proxy(pool, {
      get(target, key) {
        if (key === "query") {
          return (query: string | { name?: string; text: string; values: unknown[] }, values?: unknown[]) => {
            if (typeof query === "object" && query.name === "webhook_claim") claims += 1;
            return typeof query === "string" ? target.query(query, values) : target.query(query);
          };
        }
        const value = Reflect.get(target, key);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    // Claims come from answers here, not from the idle poll.
    const d = dispatcher({
      pool: counting,
      endpoint_in_flight_max: 4,
      concurrency_max: 8,
      batch_max: 16,
      idle_poll_ms: 5_000,
    });
    try {
      await until("every delivery", () => receiver.at("/ahead").length >= 120, 20_000);
    } finally {
      await d.stop();
    }
    assert.ok(in_flight_max <= 4, `${in_flight_max} requests in flight to one endpoint`);
    // About one claim per four answers (the endpoint's in-flight limit); one per answer without.
    assert.ok(claims < 50, `${claims} claims for 120 deliveries`);
  });

  it("on stop, rows leased ahead and never sent are due again at once", async () => {
    const ep = await endpoint("/released");
    receiver.on("/released", () => ({ status: 200, delay_ms: 1_000 }));
    await enqueue(Array.from({ length: 6 }, (_, i) => transferEvent(`evt_released_${i}`, [ep.user])));
    const d = dispatcher({ endpoint_in_flight_max: 2, concurrency_max: 4, batch_max: 12, lease_ms: 60_000 });
    await until("two requests in flight", () => receiver.at("/released").length === 2);
    await d.stop();
    const { rows } = await pool.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM webhook_deliveries
        WHERE endpoint_id = $1 AND state = 'pending' AND next_attempt_at <= now() AND claim_token IS NULL`,
      [ep.id],
    );
    // Two sent and delivered; four leased ahead (three rows per slot), released.
    assert.equal(rows[0]?.n, 4, "the rows leased ahead are due again at once");
    await deleteEndpoint(pool, ep.user, ep.id);
  });
});

describe("webhooks: kill -9 and several dispatchers", () => {
  it("after a dispatcher process is killed with SIGKILL mid-delivery, every webhook arrives at least once, signed", async () => {
    const ep = await endpoint("/killed");
    const ids = Array.from({ length: 6 }, (_, i) => `evt_killed_${i}`);
    await enqueue(ids.map((id) => transferEvent(id, [ep.user])));
    const child = spawn(process.execPath, [join(import.meta.dirname, "dying-dispatcher.ts")], {
      env: { ...process.env, WEBHOOKS_TEST_DATABASE_URL: tablesUrl(), WEBHOOKS_TEST_LEASE_MS: "2000" },
      stdio: "ignore",
    });
    const [code, signal] = (await once(child, "exit")) as [number | null, string | null];
    assert.equal(signal, "SIGKILL", `the dispatcher process ended by ${signal ?? `exit ${code}`}`);
    assert.ok(receiver.at("/killed").length >= 1, "it sent before dying");

    const survivor = dispatcher({ attempt_timeout_ms: 1_000, lease_ms: 2_000 });
    try {
      await until(
        "every delivery",
        async () => {
          const rows = await pool.query(
            "SELECT 1 FROM webhook_deliveries WHERE endpoint_id = $1 AND state <> 'delivered'",
            [ep.id],
          );
          return rows.rowCount === 0;
        },
        20_000,
      );
    } finally {
      await survivor.stop();
    }
    const got = receiver.at("/killed");
    assert.deepEqual([...new Set(got.map((r) => String(r.headers["webhook-id"])))].sort(), [...ids].sort());
    for (const r of got) verified(r, ep.secret);
    // Those sent by the killed process were sent again, with the same webhook-id.
    assert.ok(got.length > ids.length, `${got.length} requests for ${ids.length} events`);
  });

  it("two dispatchers share the queue without sending a delivery twice", async () => {
    const ep = await endpoint("/shared");
    const ids = Array.from({ length: 30 }, (_, i) => `evt_shared_${i}`);
    await enqueue(ids.map((id) => transferEvent(id, [ep.user])));
    const both = [dispatcher({ endpoint_in_flight_max: 4 }), dispatcher({ endpoint_in_flight_max: 4 })];
    try {
      await until("every delivery", () => receiver.at("/shared").length >= ids.length);
      await sleep(300);
    } finally {
      await Promise.all(both.map((d) => d.stop()));
    }
    const sent = receiver.at("/shared").map((r) => String(r.headers["webhook-id"]));
    assert.deepEqual([...sent].sort(), [...ids].sort());
  });

  it("leaves no deadline pending once an attempt has its answer", async () => {
    const ep = await endpoint("/prompt");
    await enqueue([transferEvent("evt_prompt", [ep.user])]);
    // An attempt timeout nothing else here uses: the attempt's own deadline timer is known by it.
    const attempt_timeout_ms = 4_321;
    const timers: Array<{ _destroyed?: boolean }> = [];
    const hook = createHook({
      init(_id, type, _trigger, resource) {
        const timer = resource as { _idleTimeout?: number; _destroyed?: boolean };
        if (type === "Timeout" && timer._idleTimeout === attempt_timeout_ms) timers.push(timer);
      },
    }).enable();
    const d = dispatcher({ attempt_timeout_ms, lease_ms: 10_000 });
    try {
      await until("the delivery", async () => (await deliveryState("evt_prompt"))[0]?.state === "delivered");
    } finally {
      await d.stop();
      hook.disable();
    }
    assert.ok(timers.length > 0, "no deadline was seen");
    assert.ok(
      timers.every((timer) => timer._destroyed === true),
      "the deadline of a finished attempt is still pending",
    );
  });

  it("cuts an attempt that gets no answer at the attempt timeout, and retries it", async () => {
    const ep = await endpoint("/silent");
    receiver.on("/silent", (n) => (n === 1 ? { status: 200, delay_ms: 3_000 } : { status: 200 }));
    await enqueue([transferEvent("evt_silent", [ep.user])]);
    const d = dispatcher({ attempt_timeout_ms: 300, lease_ms: 2_000 });
    try {
      await until(
        "the retry to succeed",
        async () => (await deliveryState("evt_silent"))[0]?.state === "delivered",
      );
    } finally {
      await d.stop();
    }
    const [delivery] = await deliveriesOf(ep);
    const [first, second] = delivery?.attempts ?? [];
    assert.equal(first?.status, "failed");
    assert.match(first?.error ?? "", /no answer within 300 ms/);
    assert.ok(
      (first?.latency_ms ?? 0) >= 250 && (first?.latency_ms ?? 0) < 2_500,
      `latency ${first?.latency_ms}`,
    );
    assert.equal(second?.status, "succeeded");
  });
});

describe("webhooks: secrets and addresses", () => {
  it("after a rotation, deliveries are signed with the new key and, during the grace period, the old one", async () => {
    const ep = await endpoint("/rotated");
    const rotated = await rotateSecret(pool, ep.user, ep.id, 60_000);
    assert.match(rotated.secret, /^whsec_[A-Za-z0-9+/]{43}=$/);
    assert.notEqual(rotated.secret, ep.secret);
    await enqueue([transferEvent("evt_rotated", [ep.user])]);
    const d = dispatcher();
    try {
      await until("the delivery", () => receiver.at("/rotated").length === 1);
    } finally {
      await d.stop();
    }
    const got = receiver.at("/rotated")[0] as Received;
    verified(got, rotated.secret);
    verified(got, ep.secret);
    assert.equal(String(got.headers["webhook-signature"]).split(" ").length, 2);
  });

  it("keeps one endpoint's connection alive across deliveries instead of opening one per event", async () => {
    const ep = await endpoint("/kept-alive");
    const ids = Array.from({ length: 6 }, (_, i) => `evt_kept_alive_${i}`);
    await enqueue(ids.map((id) => transferEvent(id, [ep.user])));
    const d = dispatcher({ endpoint_in_flight_max: 1 });
    try {
      await until("every delivery", () => receiver.at("/kept-alive").length === ids.length);
    } finally {
      await d.stop();
    }
    const sockets = new Set(receiver.at("/kept-alive").map((r) => r.socket));
    assert.equal(sockets.size, 1, `${ids.length} deliveries over ${sockets.size} connections`);
  });

  it("connects to the address that was checked, not to a second DNS answer", async () => {
    // Only the guard's resolver knows this name; a connection that asked DNS again would fail.
    const resolve: Resolver = async () => [{ address: "127.0.0.1", family: 4 }];
    const guard = { allow_private: true, resolve };
    const user = nextUser++;
    await createEndpoint(
      pool,
      user,
      { url: receiver.url("/pinned", "hooks.webhooks.invalid"), events: ["transfer.completed"] },
      guard,
    );
    await enqueue([transferEvent("evt_pinned", [user])]);
    const d = dispatcher({ guard });
    try {
      await until("the pinned delivery", () => receiver.at("/pinned").length === 1);
    } finally {
      await d.stop();
    }
    assert.equal(receiver.at("/pinned")[0]?.headers.host, `hooks.webhooks.invalid:${receiver.port}`);
  });

  it("refuses a private address at registration and again at each attempt", async () => {
    await assert.rejects(
      createEndpoint(
        pool,
        nextUser++,
        { url: receiver.url("/private"), events: ["transfer.completed"] },
        {
          allow_private: false,
        },
      ),
      { status: 422, code: "webhook_url_refused" } as Partial<ApiError>,
    );
    await assert.rejects(
      createEndpoint(pool, nextUser++, { url: "ftp://93.184.216.34/x", events: ["transfer.completed"] }, dev),
      { status: 422 } as Partial<ApiError>,
    );
    // Registered while allowed (or its DNS changed since): the dispatcher still refuses to call it.
    const ep = await endpoint("/private");
    await enqueue([transferEvent("evt_private", [ep.user])]);
    const d = dispatcher({ guard: { allow_private: false } });
    try {
      await until("a logged attempt", async () => ((await deliveriesOf(ep))[0]?.attempts.length ?? 0) >= 1);
    } finally {
      await d.stop();
    }
    const [delivery] = await deliveriesOf(ep);
    assert.equal(delivery?.attempts[0]?.status, "failed");
    assert.match(delivery?.attempts[0]?.error ?? "", /not a public address/);
    assert.equal(receiver.at("/private").length, 0);
  });
});

describe("webhooks: API shapes and retention", () => {
  it("lists endpoints without their secrets, in the shapes the routes publish", async () => {
    const ep = await endpoint("/shapes");
    const listed = await listEndpoints(pool, ep.user);
    assert.equal(listed.length, 1);
    endpointSchema.parse(listed[0]);
    assert.ok(!JSON.stringify(listed).includes("whsec_"), "no secret in a listing");
    await enqueue([transferEvent("evt_shapes", [ep.user])]);
    const d = dispatcher();
    try {
      await until("the delivery", async () => (await deliveryState("evt_shapes"))[0]?.state === "delivered");
    } finally {
      await d.stop();
    }
    for (const delivery of await deliveriesOf(ep)) deliveryViewSchema.parse(delivery);
    await enqueue([1, 2, 3, 4].map((n) => transferEvent(`evt_shapes_${n}`, [ep.user])));
    const seen: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await listDeliveries(pool, ep.user, ep.id, { limit: 2, cursor });
      assert.ok(page.deliveries.length <= 2);
      seen.push(...page.deliveries.map((d) => d.webhook_id));
      cursor = page.pagination.next_cursor ?? undefined;
    } while (cursor !== undefined);
    assert.equal(seen.length, 5);
    assert.equal(new Set(seen).size, 5, "each delivery on exactly one page");
    assert.equal(seen.at(-1), "evt_shapes", "newest first");
    await assert.rejects(listDeliveries(pool, ep.user, ep.id, { limit: 2, cursor: "nope" }), {
      status: 400,
    } as Partial<ApiError>);
    await assert.rejects(listDeliveries(pool, ep.user + 1_000, ep.id), { status: 404 } as Partial<ApiError>);
  });

  it("prunes finished deliveries and their attempts past the retention period, never pending ones", async () => {
    const ep = await endpoint("/pruned");
    await enqueue([transferEvent("evt_pruned_old", [ep.user]), transferEvent("evt_pruned_new", [ep.user])]);
    const d = dispatcher();
    try {
      await until("both deliveries", async () => receiver.at("/pruned").length === 2);
      await until("both recorded", async () =>
        [...(await deliveryState("evt_pruned_old")), ...(await deliveryState("evt_pruned_new"))].every(
          (r) => r.state === "delivered",
        ),
      );
    } finally {
      await d.stop();
    }
    await enqueue([transferEvent("evt_pruned_pending", [ep.user])]);
    await pool.query(
      "UPDATE webhook_deliveries SET updated_at = now() - interval '2 days' WHERE webhook_id IN ('evt_pruned_old', 'evt_pruned_pending')",
    );
    assert.equal(await pruneDeliveries(pool, 86_400_000, 100), 1);
    assert.deepEqual(await deliveryState("evt_pruned_old"), []);
    assert.equal((await deliveryState("evt_pruned_new")).length, 1);
    assert.equal((await deliveryState("evt_pruned_pending")).length, 1);
    const orphans = await pool.query(
      "SELECT 1 FROM webhook_attempts a WHERE NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.id = a.delivery_id)",
    );
    assert.equal(orphans.rowCount, 0);
  });
});
