/**
 * The saga's money-critical rules that need no engine: how a batch of record events is grouped
 * by transfer, how the ledger's batch answer is read, and how the outbox relay sends and removes
 * rows (over a store interface; the SQL itself is tested against PostgreSQL in store.test.ts).
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { trace } from "@opentelemetry/api";
import { RECORD_PACK_MAX } from "#packages/contracts/messages.ts";
import type { ConsumedMessage, OutgoingMessage } from "#packages/kafka/index.ts";
import { noCrashes } from "#packages/runtime/faults.ts";
import { contextFromKafkaHeaders, startTracing, type Tracing } from "#packages/tracing/index.ts";
import { groupByTransfer } from "../src/saga/events.ts";
import { LedgerInvariantError, readBatchAnswer, type Step } from "../src/saga/ledger-client.ts";
import { messagesOf, type OutboxRow, relayBatch, roundAfter } from "../src/saga/outbox-relay.ts";

const A = "0190b5a8-0000-7000-8000-00000000000a";
const B = "0190b5a8-0000-7000-8000-00000000000b";

let offset = 0n;
function message(value: unknown): ConsumedMessage {
  offset += 1n;
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return { topic: "transfer.events", partition: 0, offset, key: null, value: text };
}
const rejected = (transfer_id: string, status: string) => ({
  type: "TransferRecordRejected",
  message_id: randomUUID(),
  transfer_id,
  status,
  reason: "test",
});

describe("event grouping", () => {
  it("keeps each transfer's events in arrival order, apart from other transfers'", () => {
    const batch = [
      message(rejected(A, "PENDING")),
      message(rejected(B, "PENDING")),
      message(rejected(A, "COMPLETED")),
      message(rejected(A, "FAILED")),
    ];
    const { byTransfer, unreadable } = groupByTransfer(batch);
    assert.deepEqual(unreadable, []);
    assert.deepEqual([...byTransfer.keys()], [A, B]);
    assert.deepEqual(
      byTransfer.get(A)?.map((e) => e.event.status),
      ["PENDING", "COMPLETED", "FAILED"],
    );
    assert.deepEqual(
      byTransfer.get(A)?.map((e) => e.message),
      [batch[0], batch[2], batch[3]],
    );
    assert.deepEqual(
      byTransfer.get(B)?.map((e) => e.message),
      [batch[1]],
    );
  });

  it("sets apart what is not a transfer event, with why, and groups the rest", () => {
    const notJson = message("{not json");
    const notAnEvent = message({ type: "RecordTransfer", transfer_id: A });
    const good = message(rejected(B, "PENDING"));
    const { byTransfer, unreadable } = groupByTransfer([notJson, notAnEvent, good]);
    assert.deepEqual(
      unreadable.map((u) => u.message),
      [notJson, notAnEvent],
    );
    assert.equal(unreadable[0]?.reason, "value is not JSON");
    assert.match(unreadable[1]?.reason ?? "", /^not a valid transfer event: /);
    assert.deepEqual([...byTransfer.keys()], [B]);
  });

  it("reads a pack's answer as one TransferRecorded per record, in the pack's order", () => {
    const packed = message({
      type: "TransfersRecorded",
      message_id: randomUUID(),
      records: [
        { transfer_id: A, status: "PENDING" },
        { transfer_id: B, status: "COMPLETED" },
      ],
    });
    const later = message(rejected(A, "COMPLETED"));
    const { byTransfer, unreadable } = groupByTransfer([packed, later]);
    assert.deepEqual(unreadable, []);
    assert.deepEqual(
      byTransfer.get(A)?.map((e) => [e.event.type, e.event.status]),
      [
        ["TransferRecorded", "PENDING"],
        ["TransferRecordRejected", "COMPLETED"],
      ],
    );
    assert.deepEqual(
      byTransfer.get(B)?.map((e) => [e.event.type, e.event.status, e.message]),
      [["TransferRecorded", "COMPLETED", packed]],
    );
  });

  describe("with trace ids on (as every service runs)", () => {
    let tracing: Tracing;
    before(async () => {
      tracing = await startTracing({ service: "saga-rules-test", env: {} });
    });
    after(() => tracing.shutdown());

    it("handles a pack's record in the trace the record names", () => {
      const traceparent = `00-${"ab".repeat(16)}-${"cd".repeat(8)}-01`;
      const packed = message({
        type: "TransfersRecorded",
        message_id: randomUUID(),
        records: [
          { transfer_id: A, status: "PENDING", traceparent },
          { transfer_id: B, status: "PENDING" },
        ],
      });
      const { byTransfer } = groupByTransfer([packed]);
      const own = byTransfer.get(A)?.[0]?.message;
      assert.equal(trace.getSpanContext(contextFromKafkaHeaders(own?.headers))?.traceId, "ab".repeat(16));
      assert.equal(byTransfer.get(B)?.[0]?.message, packed, "a record naming none keeps the message's");
    });
  });
});

const transfer: Step = { op: "transfer", transfer_id: A, source_user_id: 1, dest_user_id: 2, amount: 100 };
const post: Step = { op: "post", transfer_id: A };
const voidB: Step = { op: "void", transfer_id: B };
const answer = (results: unknown[]) => ({ status: 200, body: { success: true, data: { results } } });
const ok = (transfer_id: string, state: string, dest_balance_before: number | null = null) => ({
  transfer_id,
  ok: true,
  hold: { state, source_balance_before: 1_000, dest_balance_before },
});
const refused = (transfer_id: string, code: string) => ({ transfer_id, ok: false, code, message: code });

describe("ledger batch answers", () => {
  it("gives each step its own answer: done, a refusal the saga acts on, or a void that found the hold posted", () => {
    const read = readBatchAnswer([post, voidB], answer([ok(A, "posted", 70), refused(B, "hold_posted")]));
    assert.deepEqual(read, [
      { kind: "ok", source_balance_before: 1_000, dest_balance_before: 70 },
      { kind: "already_posted" },
    ]);
    assert.deepEqual(readBatchAnswer([transfer], answer([refused(A, "insufficient_funds")])), [
      { kind: "rejected", reason: "insufficient_funds" },
    ]);
    assert.deepEqual(readBatchAnswer([transfer], answer([refused(A, "dest_unavailable")])), [
      { kind: "rejected", reason: "dest_unavailable" },
    ]);
    assert.deepEqual(readBatchAnswer([transfer], answer([ok(A, "posted", 5)])), [
      { kind: "ok", source_balance_before: 1_000, dest_balance_before: 5 },
    ]);
    assert.deepEqual(readBatchAnswer([post], answer([refused(A, "dest_unavailable")])), [
      { kind: "rejected", reason: "dest_unavailable" },
    ]);
  });

  it("makes an unexpected refusal or hold state an invariant error of that step alone", () => {
    const [voidPosted, mismatch] = readBatchAnswer(
      [voidB, { ...transfer, transfer_id: B }],
      answer([refused(B, "hold_voided"), refused(B, "hold_mismatch")]),
    );
    assert.ok(voidPosted instanceof LedgerInvariantError);
    assert.ok(mismatch instanceof LedgerInvariantError);
    const [transferHeld] = readBatchAnswer([transfer], answer([ok(A, "held")]));
    assert.ok(transferHeld instanceof LedgerInvariantError, "a transfer whose hold is not posted");
    // A refusal code of another step is not this one's: a post cannot be refused for funds.
    const [postFunds] = readBatchAnswer([post], answer([refused(A, "insufficient_funds")]));
    assert.ok(postFunds instanceof LedgerInvariantError);
    const [postHeld] = readBatchAnswer([post], answer([ok(A, "held")]));
    assert.ok(postHeld instanceof LedgerInvariantError, "a post whose hold is not posted");
    const [other] = readBatchAnswer([post], answer([ok(B, "posted")]));
    assert.ok(other instanceof LedgerInvariantError, "an answer for another transfer");
  });

  it("throws for the whole batch: a retryable error on 5xx, an invariant error otherwise", () => {
    assert.throws(
      () => readBatchAnswer([post], { status: 503, body: {} }),
      (error: Error) => !(error instanceof LedgerInvariantError),
    );
    assert.throws(() => readBatchAnswer([post], { status: 401, body: {} }), LedgerInvariantError);
    assert.throws(() => readBatchAnswer([post, voidB], answer([ok(A, "posted")])), LedgerInvariantError);
    assert.throws(
      () => readBatchAnswer([post], { status: 200, body: { success: true } }),
      LedgerInvariantError,
    );
  });
});

describe("outbox relay", () => {
  const rows: OutboxRow[] = [
    { id: "1", topic: "commands", key: A, payload: { n: 1 }, traceparent: null },
    { id: "2", topic: "commands", key: B, payload: { n: 2 }, traceparent: null },
  ];
  const storeOf = (held: OutboxRow[]) => {
    const removed: string[][] = [];
    const limits: number[] = [];
    return {
      removed,
      limits,
      oldest: async (limit: number) => {
        limits.push(limit);
        return held.slice(0, limit);
      },
      remove: async (ids: string[]) => {
        removed.push(ids);
      },
    };
  };

  it("sends the oldest rows, at most batch_max, then removes exactly those", async () => {
    const store = storeOf(rows);
    const sent: OutgoingMessage[][] = [];
    const producer = { send: async (messages: OutgoingMessage[]) => void sent.push(messages) };
    assert.equal(await relayBatch(store, producer, { batch_max: 10, crashes: noCrashes }), 2);
    assert.deepEqual(store.limits, [10]);
    assert.deepEqual(sent, [
      [
        { topic: "commands", key: A, value: { n: 1 } },
        { topic: "commands", key: B, value: { n: 2 } },
      ],
    ]);
    assert.deepEqual(store.removed, [["1", "2"]]);
  });

  it("removes nothing when the broker did not take the batch: the rows go again", async () => {
    const store = storeOf(rows);
    const producer = {
      send: async () => {
        throw new Error("broker unavailable");
      },
    };
    await assert.rejects(
      relayBatch(store, producer, { batch_max: 10, crashes: noCrashes }),
      /broker unavailable/,
    );
    assert.deepEqual(store.removed, []);
  });

  it("sends nothing for an empty outbox", async () => {
    const store = storeOf([]);
    let sends = 0;
    const producer = {
      send: async () => {
        sends += 1;
      },
    };
    assert.equal(await relayBatch(store, producer, { batch_max: 10, crashes: noCrashes }), 0);
    assert.equal(sends, 0);
    assert.deepEqual(store.removed, []);
  });

  it("looks again at once after a full batch, waits after a partial one", () => {
    assert.equal(roundAfter(3, 10), "idle");
    assert.equal(roundAfter(10, 10), "busy", "a full batch: more may be waiting");
  });

  describe("packing records", () => {
    const trace = (n: number) => `00-${n.toString(16).padStart(32, "0")}-${"1".repeat(16)}-01`;
    const record = (id: string, traceparent: string | null): OutboxRow => ({
      id: id.slice(-3),
      topic: "commands",
      key: id,
      payload: { type: "RecordTransfer", message_id: randomUUID(), snapshot: { id } },
      traceparent,
    });
    const idOf = (n: number) => `0190b5a8-0000-7000-8000-${n.toString(16).padStart(12, "0")}`;
    type Pack = { type?: string; snapshots?: unknown[]; traceparents?: Array<string | null> };

    it("packs a round's records into one RecordTransfers naming each one's trace, other messages as they are", () => {
      const other: OutboxRow = { id: "9", topic: "commands", key: B, payload: { n: 9 }, traceparent: null };
      const rows = [
        record(idOf(1), trace(1)),
        other,
        record(idOf(2), trace(2)),
        record(idOf(3), trace(1)),
        record(idOf(4), "not a trace context"),
      ];
      const messages = messagesOf(rows);
      assert.equal(messages.length, 2);
      const [first, second] = messages.map((m) => m.value as Pack);
      assert.equal(first?.type, "RecordTransfers");
      assert.deepEqual(first?.snapshots, [
        { id: idOf(1) },
        { id: idOf(2) },
        { id: idOf(3) },
        { id: idOf(4) },
      ]);
      assert.deepEqual(first?.traceparents, [trace(1), trace(2), trace(1), null]);
      assert.equal(messages[0]?.key, idOf(1));
      assert.deepEqual(second, { n: 9 });
    });

    it("leaves the traces out of a pack of one trace, and a record alone in its own message", () => {
      const one = messagesOf([record(idOf(5), trace(5)), record(idOf(6), trace(5))]);
      assert.equal((one[0]?.value as Pack | undefined)?.traceparents, undefined);
      const alone = messagesOf([record(idOf(7), trace(7))]);
      assert.equal((alone[0]?.value as Pack | undefined)?.type, "RecordTransfer");
    });

    it("starts a new pack past RECORD_PACK_MAX", () => {
      const rows = Array.from({ length: RECORD_PACK_MAX + 3 }, (_, i) => record(idOf(100 + i), trace(7)));
      const sizes = messagesOf(rows).map((m) => (m.value as { snapshots: unknown[] }).snapshots.length);
      assert.deepEqual(sizes, [RECORD_PACK_MAX, 3]);
    });
  });
});
