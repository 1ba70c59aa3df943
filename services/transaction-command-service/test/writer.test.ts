/**
 * The record writer's failure policy, against a stand-in for the few MongoDB calls it makes
 * (ping, insertMany, updateOne, insertOne, findOne) whose writes time out or fail for chosen
 * transfers. The writer against the real store is covered by the integration tests.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import type { Db } from "mongodb";
import {
  type RecordTransferCommand,
  type RecordTransfersCommand,
  recordCommandSchema,
  topicNames,
} from "#packages/contracts/messages.ts";
import type { TransferStatus } from "#packages/contracts/transfer.ts";
import type { ConsumedMessage, OutgoingMessage } from "#packages/kafka/index.ts";
import { createLogger } from "#packages/log/index.ts";
import type { TransferDocument } from "#packages/records/index.ts";
import { InvariantError } from "#packages/runtime/assert.ts";
import { startTracing } from "#packages/tracing/index.ts";
import { createRecordWriter } from "../src/writer.ts";

const topics = topicNames("unit.");
const logger = createLogger("writer-test", "silent");

function timeoutError(): Error {
  return Object.assign(new Error("connection 7 to 127.0.0.1:57017 timed out"), {
    name: "MongoNetworkTimeoutError",
  });
}

/** A records collection in memory whose writes of `failing` ids throw `failure()`. */
function fakeStore(failing: Set<string>, failure: () => Error) {
  const docs = new Map<string, TransferDocument>();
  const guard = (ids: string[]) => {
    if (ids.some((id) => failing.has(id))) throw failure();
  };
  const collection = {
    async insertMany(items: TransferDocument[]) {
      guard(items.map((d) => d._id));
      for (const d of items) if (!docs.has(d._id)) docs.set(d._id, d);
    },
    async updateOne(filter: { _id: string; rank: number }, update: { $set: Partial<TransferDocument> }) {
      guard([filter._id]);
      const stored = docs.get(filter._id);
      if (stored === undefined || stored.rank !== filter.rank) return { matchedCount: 0 };
      docs.set(filter._id, { ...stored, ...update.$set });
      return { matchedCount: 1 };
    },
    async insertOne(doc: TransferDocument) {
      guard([doc._id]);
      if (docs.has(doc._id)) throw Object.assign(new Error("duplicate key"), { code: 11000 });
      docs.set(doc._id, doc);
    },
    async findOne(filter: { _id: string }) {
      return docs.get(filter._id) ?? null;
    },
  };
  const db = { command: async () => ({ ok: 1 }), collection: () => collection } as unknown as Db;
  return { db, docs };
}

function fakeProducer() {
  const sent: OutgoingMessage[] = [];
  return {
    sent,
    producer: { send: async (m: OutgoingMessage[]) => void sent.push(...m), close: async () => {} },
  };
}

let offset = 0n;
function message(id: string, status: TransferStatus = "PENDING"): ConsumedMessage {
  const command: RecordTransferCommand = {
    type: "RecordTransfer",
    message_id: "0190b5a8-0000-7000-8000-00000000000a",
    snapshot: snapshotOf(id, status),
  };
  offset += 1n;
  return { topic: topics.commands, partition: 0, offset, key: id, value: JSON.stringify(command) };
}

/** One RecordTransfers message carrying the records of `ids`. */
function pack(
  ids: string[],
  status: TransferStatus = "PENDING",
  traceparents?: Array<string | null>,
): ConsumedMessage {
  const command: RecordTransfersCommand = {
    type: "RecordTransfers",
    message_id: "0190b5a8-0000-7000-8000-00000000000b",
    snapshots: ids.map((id) => snapshotOf(id, status)),
    ...(traceparents === undefined ? {} : { traceparents }),
  };
  offset += 1n;
  return { topic: topics.commands, partition: 0, offset, key: ids[0] ?? "", value: JSON.stringify(command) };
}

function snapshotOf(id: string, status: TransferStatus): RecordTransferCommand["snapshot"] {
  return {
    id,
    amount: 10,
    source_user_id: 1,
    dest_user_id: 2,
    source_init_bal: 100,
    dest_init_bal: null,
    status,
    failure_reason: null,
    created_at: "2026-01-01T00:00:00.000Z",
    updated_at: "2026-01-01T00:00:00.000Z",
  };
}

const idOf = (n: number) => `0190b5a8-0000-7000-8000-${n.toString(16).padStart(12, "0")}`;

/** Hand the same batch to the writer until it is accepted, as the consumer does; returns the calls made. */
async function deliverUntilAccepted(
  handle: (m: ConsumedMessage[]) => Promise<void>,
  batch: ConsumedMessage[],
) {
  for (let calls = 1; calls <= 200; calls++) {
    try {
      await handle(batch);
      return calls;
    } catch {}
  }
  return assert.fail("the batch was never accepted");
}

function writer(db: Db, producer: ReturnType<typeof fakeProducer>["producer"], extra = {}) {
  return createRecordWriter({
    db,
    producer,
    topics,
    logger,
    faults: { reject_records_for_source_user_ids: new Set() },
    attempts_max: 3,
    service: "transaction-command-service",
    ...extra,
  });
}

/** The records of the one TransfersRecorded sent. */
function packAnswer(sent: OutgoingMessage[]): Array<{ transfer_id: string; status: string }> {
  const answers = sent.filter((m) => (m.value as { type: string }).type === "TransfersRecorded");
  const [answer, ...more] = answers;
  assert.ok(answer !== undefined && more.length === 0, `${answers.length} TransfersRecorded sent`);
  return (answer.value as { records: Array<{ transfer_id: string; status: string }> }).records;
}

const deadLetterKeys = (sent: OutgoingMessage[]) =>
  sent.filter((m) => m.topic === topics.deadLetters).map((m) => m.key);

describe("record writer failure policy", () => {
  it("halves a batch that keeps timing out until the failing command is alone, then dead-letters it", async () => {
    const poison = idOf(37);
    const { db, docs } = fakeStore(new Set([poison]), timeoutError);
    const { sent, producer } = fakeProducer();
    const batch = Array.from({ length: 64 }, (_, i) => message(idOf(i)));
    const calls = await deliverUntilAccepted(writer(db, producer), batch);

    assert.deepEqual(deadLetterKeys(sent), [poison]);
    const rejected = sent.filter((m) => (m.value as { type: string }).type === "TransferRecordRejected");
    assert.deepEqual(
      rejected.map((m) => m.key),
      [poison],
    );
    assert.equal(docs.size, 63, "every other command is written");
    assert.equal(sent.filter((m) => (m.value as { type: string }).type === "TransferRecorded").length, 63);
    // 64 -> 1 is six halvings of two timeouts each, then three attempts alone.
    assert.ok(calls <= 6 * 2 + 3 + 1, `${calls} deliveries`);
  });

  it("keeps retrying the whole batch, uncounted, while the store does not answer", async () => {
    const { db } = fakeStore(new Set([idOf(1)]), timeoutError);
    (db as unknown as { command: () => Promise<never> }).command = async () => {
      throw new Error("server selection timed out");
    };
    const { sent, producer } = fakeProducer();
    const handle = writer(db, producer);
    for (let i = 0; i < 10; i++) await assert.rejects(handle([message(idOf(1)), message(idOf(2))]));
    assert.equal(sent.length, 0, "nothing is dead-lettered during an outage");
  });

  it("treats a broken connection as an outage even when a ping answers: uncounted, connections reopened", async () => {
    const closed = () =>
      Object.assign(new Error("connection 3 to 127.0.0.1:57017 closed"), { name: "MongoNetworkError" });
    const { db } = fakeStore(new Set([idOf(1)]), closed);
    const { sent, producer } = fakeProducer();
    let resets = 0;
    const handle = writer(db, producer, { resetStore: async () => void resets++ });
    for (let i = 0; i < 10; i++) await assert.rejects(handle([message(idOf(1))]));
    assert.equal(sent.length, 0, "a restart of the store dead-letters nothing");
    assert.ok(resets >= 3, `${resets} resets`);
  });

  it("reopens a closed client at its first failure: a reset whose reconnect failed leaves it closed for good", async () => {
    const closed = () => Object.assign(new Error("Topology is closed"), { name: "MongoTopologyClosedError" });
    const { db } = fakeStore(new Set([idOf(1)]), closed);
    (db as unknown as { command: () => Promise<never> }).command = async () => {
      throw closed();
    };
    const { sent, producer } = fakeProducer();
    let resets = 0;
    const handle = writer(db, producer, { resetStore: async () => void resets++ });
    for (let i = 0; i < 4; i++) await assert.rejects(handle([message(idOf(1))]));
    assert.equal(sent.length, 0, "a closed client dead-letters nothing");
    assert.equal(resets, 4, "every failure on a closed client reopens it");
  });

  it("does not forget a failing command's attempts while other commands make progress", async () => {
    const poison = idOf(1000);
    const flaky = new Set<string>();
    const failing = new Set([poison]);
    const { db } = fakeStore(failing, () => new Error("document rejected"));
    const { sent, producer } = fakeProducer();
    const handle = writer(db, producer, { attempts_tracked_max: 4 });
    const poisonMessage = message(poison);

    let n = 0;
    const progress = async () => {
      // Commands that fail once, then go through: each is counted, then written.
      for (let i = 0; i < 6; i++) {
        const id = idOf(++n);
        failing.add(id);
        flaky.add(id);
        const batch = [message(id)];
        await assert.rejects(handle(batch));
        failing.delete(id);
        await handle(batch);
      }
    };
    await assert.rejects(handle([poisonMessage]));
    await progress();
    await assert.rejects(handle([poisonMessage]));
    await progress();
    // The third failure, even redelivered at another offset, is the last one.
    await handle([{ ...poisonMessage, offset: poisonMessage.offset + 100n }]);
    assert.deepEqual(deadLetterKeys(sent), [poison]);
  });

  it("dead-letters a command that breaks an invariant at once, without retries, and writes the others", async () => {
    const poison = idOf(3000);
    const { db, docs } = fakeStore(new Set([poison]), () => new InvariantError("a record went backwards"));
    const { sent, producer } = fakeProducer();
    const calls = await deliverUntilAccepted(writer(db, producer), [message(idOf(3001)), message(poison)]);
    assert.equal(calls, 1, "no delivery is retried");
    assert.deepEqual(deadLetterKeys(sent), [poison]);
    assert.equal(docs.size, 1, "the other command is written");
  });

  it("gives a dead-lettered command a fresh count once its letter is sent (a replay is tried again)", async () => {
    const poison = idOf(2000);
    const { db } = fakeStore(new Set([poison]), () => new Error("document rejected"));
    const { sent, producer } = fakeProducer();
    const handle = writer(db, producer);
    assert.equal(await deliverUntilAccepted(handle, [message(poison)]), 3);
    assert.equal(await deliverUntilAccepted(handle, [message(poison)]), 3);
    assert.deepEqual(deadLetterKeys(sent), [poison, poison]);
  });

  it("answers a pack of records with one TransfersRecorded naming every record written", async () => {
    const { db, docs } = fakeStore(new Set(), timeoutError);
    const { sent, producer } = fakeProducer();
    const ids = Array.from({ length: 40 }, (_, i) => idOf(4000 + i));
    await deliverUntilAccepted(writer(db, producer), [pack(ids), message(idOf(4100))]);
    assert.equal(docs.size, 41);
    const types = sent.map((m) => (m.value as { type: string }).type).sort();
    assert.deepEqual(types, ["TransferRecorded", "TransfersRecorded"]);
    const records = packAnswer(sent);
    assert.deepEqual(
      records.map((r) => r.transfer_id),
      ids,
    );
    assert.ok(records.every((r) => r.status === "PENDING"));
  });

  it("answers a pack of several traces naming each record's own, and rejects a record in its own trace", async () => {
    const tracing = await startTracing({ service: "writer-test", env: {} });
    after(() => tracing.shutdown());
    const traceOf = (n: number) => `00-${n.toString(16).padStart(32, "0")}-${"2".repeat(16)}-01`;
    const poison = idOf(4203);
    const { db } = fakeStore(new Set([poison]), () => new InvariantError("a record went backwards"));
    const { sent, producer } = fakeProducer();
    const ids = [idOf(4201), idOf(4202), poison];
    const traces = [traceOf(1), traceOf(2), traceOf(3)];
    assert.equal(await deliverUntilAccepted(writer(db, producer), [pack(ids, "PENDING", traces)]), 1);
    const records = packAnswer(sent) as Array<{ transfer_id: string; traceparent?: string }>;
    assert.deepEqual(
      records.map((r) => [r.transfer_id, r.traceparent?.split("-")[1]]),
      [
        [idOf(4201), traceOf(1).split("-")[1]],
        [idOf(4202), traceOf(2).split("-")[1]],
      ],
    );
    assert.deepEqual(deadLetterKeys(sent), [poison]);
    const rejected = sent.find((m) => (m.value as { type: string }).type === "TransferRecordRejected");
    const headers = (rejected?.headers ?? {}) as Record<string, string>;
    assert.equal(headers.traceparent?.split("-")[1], traceOf(3).split("-")[1]);
  });

  it("dead-letters a pack's failing record alone, as a RecordTransfer of its own, and answers the others", async () => {
    const poison = idOf(5003);
    const { db, docs } = fakeStore(new Set([poison]), () => new InvariantError("a record went backwards"));
    const { sent, producer } = fakeProducer();
    const ids = [idOf(5001), idOf(5002), poison, idOf(5004)];
    assert.equal(await deliverUntilAccepted(writer(db, producer), [pack(ids)]), 1);
    assert.equal(docs.size, 3);
    assert.deepEqual(deadLetterKeys(sent), [poison]);
    const letter = sent.find((m) => m.topic === topics.deadLetters)?.value as { value: string };
    const replayable = recordCommandSchema.parse(JSON.parse(letter.value));
    assert.equal(replayable.type, "RecordTransfer");
    assert.equal(replayable.type === "RecordTransfer" && replayable.snapshot.id, poison);
    assert.deepEqual(
      packAnswer(sent).map((r) => r.transfer_id),
      ids.filter((id) => id !== poison),
    );
    const rejected = sent.filter((m) => (m.value as { type: string }).type === "TransferRecordRejected");
    assert.deepEqual(
      rejected.map((m) => m.key),
      [poison],
    );
  });
});
