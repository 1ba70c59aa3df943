/**
 * Reads through the public API: who sees which balance, what the cache may hold, and that one
 * transfer or page has one cache entry however its id or cursor is spelled.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { createClient } from "redis";
import { uuidv7 } from "#packages/contracts/ids.ts";
import { topicNames } from "#packages/contracts/messages.ts";
import { kafkaPasswordVariable, operatorKafkaSasl } from "#packages/kafka/access.ts";
import { createProducer, type JsonProducer } from "#packages/kafka/index.ts";
import { listDeadLetters } from "../../ops/dead-letters.ts";
import {
  asAdmin,
  bearer,
  call,
  createUser,
  internalUrls,
  settled,
  type TestUser,
  transfer,
  urls,
} from "./api.ts";

const redisPrefix = process.env.REDIS_KEY_PREFIX ?? "test:";
const topics = topicNames(process.env.KAFKA_TOPIC_PREFIX ?? "test.");
const brokers = (process.env.TEST_KAFKA_BROKERS ?? "127.0.0.1:59092").split(",");
const redis = createClient({ url: process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:56379/0" });
let producer: JsonProducer;

before(async () => {
  await redis.connect();
  // Events come only from the record writer's principal (the broker refuses anyone else): a
  // forged one is sent as that principal, as a bug or a compromise of the writer would send it.
  const mechanism = process.env.KAFKA_SASL_MECHANISM === "scram-sha-256" ? "SCRAM-SHA-256" : "SCRAM-SHA-512";
  const writer = {
    mechanism,
    username: "transaction-command-service",
    password: process.env[kafkaPasswordVariable("transaction-command-service")] ?? "",
  } as const;
  producer = createProducer({
    brokers,
    sasl: process.env.KAFKA_SASL_MECHANISM ? writer : undefined,
    client_id: "reads-test",
  });
});
after(async () => {
  await producer.close();
  await redis.quit();
});

const dropCached = (id: string) => redis.del(`${redisPrefix}transfer:${id}`);

async function completedTransfer(): Promise<{ a: TestUser; b: TestUser; id: string }> {
  const a = await createUser(10_000);
  const b = await createUser(300);
  const answer = await transfer(
    { source_user_id: a.id, dest_user_id: b.id, amount: 2_500 },
    undefined,
    a.token,
  );
  assert.equal(answer.status, 201, JSON.stringify(answer.body));
  const id: string = answer.body.data.transaction.id;
  assert.equal((await settled(id, a.token)).status, "COMPLETED");
  await recorded(id);
  return { a, b, id };
}

/** Until the read side holds the final record (a cold read goes there), and its event has passed. */
async function recorded(id: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const record = await call("GET", `${urls.query}/transactions/${id}`, { headers: asAdmin() });
    if (record.status === 200 && record.body.data.transaction.status !== "PENDING") break;
    assert.ok(Date.now() < deadline, `the record of ${id} is not final`);
    await sleep(100);
  }
  await sleep(500);
}

// biome-ignore lint/suspicious/noExplicitAny: free-form JSON
async function readAs(id: string, headers: Record<string, string>): Promise<any> {
  const answer = await call("GET", `${urls.transaction}/transactions/${id}`, { headers });
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  return answer.body.data.transaction;
}

// biome-ignore lint/suspicious/noExplicitAny: free-form JSON
async function listAs(user_id: number, headers: Record<string, string>, query = ""): Promise<any> {
  const answer = await call("GET", `${urls.transaction}/transactions/user/${user_id}${query}`, { headers });
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  return answer.body.data;
}

describe("balance privacy", () => {
  it("shows the payer only source_init_bal and the payee only dest_init_bal, the operator both", async () => {
    const { a, b, id } = await completedTransfer();
    const viewers = [
      { name: "payer", headers: bearer(a.token), source: 10_000, dest: null },
      { name: "payee", headers: bearer(b.token), source: null, dest: 300 },
      { name: "operator", headers: asAdmin(), source: 10_000, dest: 300 },
    ];
    for (const cold of [true, false]) {
      for (const viewer of viewers) {
        if (cold) await dropCached(id);
        const seen = await readAs(id, viewer.headers);
        const what = `${viewer.name}, ${cold ? "cold" : "warm"} cache`;
        assert.equal(seen.source_init_bal, viewer.source, what);
        assert.equal(seen.dest_init_bal, viewer.dest, what);
        assert.equal(seen.amount, 2_500, what);
      }
    }
    // Lists: the first read of a page fills the cache, the second is served from it.
    const pages = [
      { user: b.id, readers: [viewers[1], viewers[2]] },
      { user: a.id, readers: [viewers[2], viewers[0]] },
    ];
    for (const { user, readers } of pages) {
      for (const viewer of readers) {
        if (viewer === undefined) continue;
        const [seen] = (await listAs(user, viewer.headers)).transactions;
        assert.equal(seen.id, id);
        assert.equal(seen.source_init_bal, viewer.source, `${viewer.name}, list of ${user}`);
        assert.equal(seen.dest_init_bal, viewer.dest, `${viewer.name}, list of ${user}`);
      }
    }
  });

  it("answers the payer's POST with their own balance only", async () => {
    const a = await createUser(1_000);
    const b = await createUser(50);
    const body = { source_user_id: a.id, dest_user_id: b.id, amount: 10 };
    const key = `privacy-${a.id}`;
    const first = await transfer(body, key, a.token);
    assert.equal(first.status, 201);
    assert.equal(first.body.data.transaction.source_init_bal, 1_000);
    assert.equal(first.body.data.transaction.dest_init_bal, null);
    await settled(first.body.data.transaction.id, a.token);
    const replay = await transfer(body, key, a.token);
    assert.equal(replay.body.data.transaction.dest_init_bal, null);
  });
});

describe("cache", () => {
  it("never shows a snapshot carried by an event that disagrees with the saga", async () => {
    const { a, b, id } = await completedTransfer();
    await readAs(id, bearer(a.token)); // cached now
    const seen = await readAs(id, asAdmin());
    const forged = { ...seen, amount: 999_999, source_init_bal: 1, dest_init_bal: 2 };
    await producer.send([
      {
        topic: topics.events,
        key: id,
        value: {
          type: "TransferRecorded",
          message_id: crypto.randomUUID(),
          transfer_id: id,
          status: "COMPLETED",
          snapshot: forged,
        },
      },
    ]);
    // Keep reading for a while after the event, from the cache and from a cold start.
    const until = Date.now() + 4_000;
    while (Date.now() < until) {
      for (const viewer of [bearer(a.token), bearer(b.token), asAdmin()]) {
        const now = await readAs(id, viewer);
        assert.equal(now.amount, 2_500);
        assert.notEqual(now.source_init_bal, 1);
        assert.notEqual(now.dest_init_bal, 2);
      }
      const [listed] = (await listAs(b.id, bearer(b.token))).transactions;
      assert.equal(listed.amount, 2_500);
      await sleep(200);
    }
  });

  it("drops a shared entry that is behind the saga when a record event comes; a final read never goes back", async () => {
    const { a, id } = await completedTransfer();
    const seen = await readAs(id, asAdmin());
    // What a read caches when the record lagged the saga: an older status.
    const stale = { ...seen, status: "PENDING", dest_init_bal: null };
    const key = `${redisPrefix}transfer:${id}`;
    await redis.set(key, `1|${JSON.stringify(stale)}`, { PX: 120_000 });
    // The service keeps the final transfer it wrote through: the stale shared entry never shows.
    assert.equal((await readAs(id, bearer(a.token))).status, "COMPLETED");
    const generation = async () =>
      Number((await redis.get(`${redisPrefix}user-transfers-gen:${a.id}`)) ?? "0");
    const generation_before = await generation();
    // A redelivered record event (the writer's own, unchanged) makes the saga look again.
    await producer.send([
      {
        topic: topics.events,
        key: id,
        value: {
          type: "TransferRecorded",
          message_id: crypto.randomUUID(),
          transfer_id: id,
          status: "COMPLETED",
          snapshot: seen,
        },
      },
    ]);
    // The shared entry (what another copy of the service, or this one after a restart, reads)
    // is dropped.
    const deadline = Date.now() + 20_000;
    while ((await redis.get(key))?.startsWith("1|") === true) {
      assert.ok(Date.now() < deadline, "the stale entry outlived the record event");
      await sleep(100);
    }
    assert.equal((await readAs(id, bearer(a.token))).status, "COMPLETED");
    // And the payer's cached list pages are stale from then on: a new generation.
    assert.ok((await generation()) > generation_before, "the record event started a new generation of lists");
  });

  it("drops and counts an event for a transfer the saga does not know", async () => {
    const count = async (): Promise<number> => {
      const answer = await call("GET", `${internalUrls.transaction}/ops/events`, { headers: asAdmin() });
      assert.equal(answer.status, 200, JSON.stringify(answer.body));
      return answer.body.data.unknown_transfer_events;
    };
    const a = await createUser(0);
    const refused = await call("GET", `${internalUrls.transaction}/ops/events`, { headers: bearer(a.token) });
    assert.equal(refused.status, 403);
    const before = await count();
    const unknown = uuidv7();
    const now = new Date().toISOString();
    await producer.send([
      {
        topic: topics.events,
        key: unknown,
        value: {
          type: "TransferRecorded",
          message_id: crypto.randomUUID(),
          transfer_id: unknown,
          status: "PENDING",
          snapshot: {
            id: unknown,
            amount: 1,
            source_user_id: a.id,
            dest_user_id: a.id + 1,
            source_init_bal: 1,
            dest_init_bal: null,
            status: "PENDING",
            failure_reason: null,
            created_at: now,
            updated_at: now,
          },
        },
      },
    ]);
    const deadline = Date.now() + 20_000;
    while ((await count()) === before) {
      assert.ok(Date.now() < deadline, "the event was not counted");
      await sleep(100);
    }
    const read = await call("GET", `${urls.transaction}/transactions/${unknown}`, { headers: asAdmin() });
    assert.equal(read.status, 404, "nothing about it reached the reads");
    const letters = await listDeadLetters({
      brokers,
      sasl: operatorKafkaSasl(),
      topic_prefix: process.env.KAFKA_TOPIC_PREFIX ?? "test.",
    });
    assert.equal(letters.filter((l) => l.letter.origin.key === unknown).length, 0, "not a dead letter");
  });

  it("shares one entry between the upper- and lower-case spelling of a transfer id", async () => {
    const { a, id } = await completedTransfer();
    // The write-through filled the shared entry under the lower-case id only.
    assert.equal(await redis.exists(`${redisPrefix}transfer:${id}`), 1, "the shared entry is there");
    const upper = await readAs(id.toUpperCase(), bearer(a.token));
    assert.deepEqual(upper, await readAs(id, bearer(a.token)));
    assert.equal(upper.id, id);
    assert.equal(
      await redis.exists(`${redisPrefix}transfer:${id.toUpperCase()}`),
      0,
      "no entry of another spelling",
    );
    // A cold read (the entry gone) by the other spelling is answered alike.
    await dropCached(id);
    assert.deepEqual(await readAs(id.toUpperCase(), asAdmin()), await readAs(id, asAdmin()));
  });

  it("caches a page once however its cursor is spelled", async () => {
    const { b } = await completedTransfer();
    const a = await createUser(1_000);
    const second = await transfer(
      { source_user_id: a.id, dest_user_id: b.id, amount: 7 },
      undefined,
      a.token,
    );
    await settled(second.body.data.transaction.id, a.token);
    await recorded(second.body.data.transaction.id);
    const first = await listAs(b.id, bearer(b.token), "?limit=1");
    const cursor: string = first.pagination.next_cursor;
    const payload = JSON.parse(Buffer.from(cursor, "base64url").toString("utf8"));
    const respelled = Buffer.from(
      JSON.stringify({ id: payload.id.toUpperCase(), t: payload.t.replace("Z", "+00:00") }),
    ).toString("base64url");
    // A record event between the two reads starts a new generation of the user's pages: try again.
    const generation = async () => (await redis.get(`${redisPrefix}user-transfers-gen:${b.id}`)) ?? "0";
    for (let attempt = 0; attempt < 5; attempt++) {
      const gen = await generation();
      const canonical = await listAs(b.id, bearer(b.token), `?limit=2&cursor=${cursor}`);
      const other = await listAs(b.id, bearer(b.token), `?limit=2&cursor=${respelled}`);
      if ((await generation()) !== gen) continue;
      assert.deepEqual(other, canonical);
      assert.equal(canonical.transactions.length, 1);
      const keys = await redis.keys(`${redisPrefix}user-transfers:${b.id}:${gen}:2:*`);
      assert.equal(keys.length, 1, `one cache entry for both spellings: ${keys.join(", ")}`);
      return;
    }
    assert.fail("the user's pages kept changing");
  });
});
