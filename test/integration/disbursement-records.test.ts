/**
 * Disbursement records: a batch's record reaches MongoDB through the command service and the
 * query service serves it; the public reads go through the cache, which a record event keeps
 * fresh; a redelivered or older snapshot never changes a record.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { type Collection, MongoClient } from "mongodb";
import { uuidv7 } from "#packages/contracts/ids.ts";
import { topicNames } from "#packages/contracts/messages.ts";
import { operatorKafkaSasl } from "#packages/kafka/access.ts";
import { createProducer } from "#packages/kafka/index.ts";
import { DISBURSEMENTS_COLLECTION } from "#packages/records/disbursements.ts";
import { runAudit } from "../../ops/audit.ts";
import { type Answer, asQuery, bearer, call, createUser, type TestUser, uniqueName, urls } from "./api.ts";

const UNKNOWN_USER = 2_000_000_000;
const topics = topicNames(process.env.KAFKA_TOPIC_PREFIX ?? "test.");
const brokers = (process.env.TEST_KAFKA_BROKERS ?? "127.0.0.1:59092").split(",");

function disburse(payer: TestUser, items: Array<{ dest_user_id: number; amount: number }>): Promise<Answer> {
  return call("POST", `${urls.transaction}/disbursements`, {
    body: { source_user_id: payer.id, items: items.map((item, i) => ({ ...item, reference: `r${i}` })) },
    headers: { ...bearer(payer.token), "idempotency-key": uniqueName("rec") },
  });
}

async function publicRead(id: string, token: string, prefer?: string): Promise<Answer> {
  const headers = prefer === undefined ? bearer(token) : { ...bearer(token), prefer };
  return call("GET", `${urls.transaction}/disbursements/${id}`, { headers });
}

/** The query service's record once `accept` holds for it. */
// biome-ignore lint/suspicious/noExplicitAny: free-form JSON
async function recordWhen(id: string, accept: (record: any) => boolean, timeout_ms = 60_000): Promise<any> {
  const deadline = Date.now() + timeout_ms;
  for (;;) {
    const answer = await call("GET", `${urls.query}/disbursements/${id}`, { headers: asQuery() });
    if (answer.status === 200 && accept(answer.body.data.disbursement)) return answer.body.data.disbursement;
    if (Date.now() > deadline) assert.fail(`record of ${id} never matched: ${JSON.stringify(answer.body)}`);
    await sleep(100);
  }
}

async function finalBatch(payer: TestUser, payee: TestUser) {
  const made = await disburse(payer, [
    { dest_user_id: payee.id, amount: 300 },
    { dest_user_id: UNKNOWN_USER, amount: 200 },
    { dest_user_id: payee.id, amount: 100 },
  ]);
  assert.equal(made.status, 201, JSON.stringify(made.body));
  const id: string = made.body.data.disbursement.id;
  const final = await publicRead(id, payer.token, "wait=30");
  assert.equal(final.status, 200);
  assert.equal(final.body.data.disbursement.status, "PARTIALLY_COMPLETED");
  return { id, final: final.body.data.disbursement };
}

const engines = {
  ledger_database_url: process.env.TEST_LEDGER_DATABASE_URL ?? "",
  saga_database_url: process.env.TEST_SAGA_DATABASE_URL ?? "",
  mongo_url: process.env.TEST_MONGO_URL ?? "mongodb://127.0.0.1:27017/",
  mongo_database: process.env.TEST_MONGO_DATABASE ?? "dps_test",
};

/** The records collection itself: what the tests change behind the writer's back. */
async function withRecords<T>(use: (records: Collection<{ _id: string }>) => Promise<T>): Promise<T> {
  const mongo = new MongoClient(engines.mongo_url);
  try {
    return await use(mongo.db(engines.mongo_database).collection<{ _id: string }>(DISBURSEMENTS_COLLECTION));
  } finally {
    await mongo.close();
  }
}

describe("disbursement records", () => {
  const marks: string[] = [];
  after(async () => {
    // The marker records name no batch of the saga: taken out so the final audit sees none.
    if (marks.length > 0) await withRecords((records) => records.deleteMany({ _id: { $in: marks } }));
  });

  it("records a batch in MongoDB; the query service serves it and the payer's list", async () => {
    const payer = await createUser(1_000);
    const payee = await createUser();
    const { id, final } = await finalBatch(payer, payee);
    const record = await recordWhen(id, (r) => r.status !== "PENDING");
    const { version, ...shown } = record;
    assert.ok(version >= 2, `version ${version}`);
    assert.deepEqual(shown, final);
    assert.deepEqual(record.counts, { pending: 0, completed: 2, failed: 1 });
    assert.equal(record.amount_completed, 400);
    assert.equal(record.amount_refunded, 200);

    const list = await call("GET", `${urls.query}/disbursements/user/${payer.id}`, { headers: asQuery() });
    assert.equal(list.status, 200, JSON.stringify(list.body));
    assert.deepEqual(
      list.body.data.disbursements.map((d: { id: string }) => d.id),
      [id],
    );
    const mine = await call("GET", `${urls.transaction}/disbursements`, { headers: bearer(payer.token) });
    assert.equal(mine.status, 200);
    assert.deepEqual(mine.body.data.disbursements, [final]);
    // The read side serves transaction-service and the operator, never a user.
    const direct = await call("GET", `${urls.query}/disbursements/${id}`, { headers: bearer(payer.token) });
    assert.ok([401, 403].includes(direct.status), `a user read the record directly: ${direct.status}`);
  });

  it("a cached PENDING batch reads final soon after it turns final (the record event refreshes it)", async () => {
    const payer = await createUser(100_000);
    const payee = await createUser();
    for (let tries = 1; ; tries++) {
      const made = await disburse(
        payer,
        Array.from({ length: 200 }, () => ({ dest_user_id: payee.id, amount: 1 })),
      );
      assert.equal(made.status, 201, JSON.stringify(made.body));
      const id: string = made.body.data.disbursement.id;
      // A read that finds the PENDING record caches it (the saga's row is never cached by a read).
      await recordWhen(id, () => true);
      const cached = await publicRead(id, payer.token);
      const final = await publicRead(id, payer.token, "wait=30");
      assert.equal(final.body.data.disbursement.status, "COMPLETED");
      if (cached.body.data.disbursement.status !== "PENDING") {
        // The batch was final before it could be cached: nothing shown about invalidation.
        if (tries < 3) continue;
        assert.fail("three batches in a row were final before a read could cache them");
      }
      // Well below the PENDING entry's TTL (30 s): the record event put the saga's row in.
      const deadline = Date.now() + 10_000;
      for (;;) {
        const plain = await publicRead(id, payer.token);
        if (plain.body.data.disbursement.status === "COMPLETED") {
          assert.deepEqual(plain.body.data.disbursement, final.body.data.disbursement);
          return;
        }
        if (Date.now() > deadline) assert.fail(`a stale PENDING entry outlived the batch's final record`);
        await sleep(100);
      }
    }
  });

  it("a redelivered or older snapshot changes nothing", async () => {
    const payer = await createUser(1_000);
    const payee = await createUser();
    const { id } = await finalBatch(payer, payee);
    const record = await recordWhen(id, (r) => r.status !== "PENDING");
    const mark = uuidv7();
    marks.push(mark);
    const command = (snapshot: unknown) => ({
      topic: topics.commands,
      // One key: one partition, so the marker is written after the others.
      key: id,
      value: { type: "RecordDisbursement", message_id: crypto.randomUUID(), snapshot },
    });
    const producer = createProducer({
      brokers,
      sasl: operatorKafkaSasl(),
      client_id: "disbursement-records-test",
    });
    try {
      await producer.send([
        // The same version again, altered: a redelivery is never applied twice.
        command({ ...record, reference: "tampered" }),
        // An older version: PENDING again, all items pending.
        command({
          ...record,
          version: record.version - 1,
          status: "PENDING",
          counts: { pending: record.item_count, completed: 0, failed: 0 },
          amount_completed: 0,
          amount_refunded: 0,
        }),
        command({ ...record, id: mark, version: 1 }),
      ]);
    } finally {
      await producer.close();
    }
    await recordWhen(mark, () => true);
    assert.deepEqual(await recordWhen(id, () => true), record);
    const read = await publicRead(id, payer.token);
    assert.equal(read.body.data.disbursement.status, "PARTIALLY_COMPLETED");
  });

  it("the audit reports a batch record that disagrees with the saga", {
    skip: engines.saga_database_url === "" ? "the test stack's database URLs are not set" : false,
  }, async () => {
    const payer = await createUser(1_000);
    const payee = await createUser();
    const { id } = await finalBatch(payer, payee);
    const record = await recordWhen(id, (r) => r.status !== "PENDING");
    const mine = async () =>
      (await runAudit({ ...engines, quiet: false })).violations.filter((v) => v.includes(id));
    assert.deepEqual(await mine(), []);
    await withRecords((records) => records.updateOne({ _id: id }, { $set: { amount_refunded: 0 } }));
    try {
      const found = await mine();
      assert.equal(found.length, 1, JSON.stringify(found));
      assert.match(found[0] as string, /differs from the saga/);
    } finally {
      await withRecords((records) =>
        records.updateOne({ _id: id }, { $set: { amount_refunded: record.amount_refunded } }),
      );
    }
    assert.deepEqual(await mine(), []);
  });
});
