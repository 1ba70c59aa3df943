/**
 * Property test of the saga's orchestration: the real SagaRunner and the real record-writer
 * plan, against a model ledger and a model network that duplicates, reorders and drops
 * deliveries, loses ledger answers after the effect, refuses records and closes wallets.
 * After every step: conservation (I1), no negative balance (I2), clearing equals the holds in
 * flight. After the faults stop and the system drains: every transfer is final (I4), its
 * money matches its status, and no step moved money twice (I3).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import {
  type RecordTransferCommand,
  recordTransferCommandSchema,
  type TransferEvent,
  topicNames,
} from "#packages/contracts/messages.ts";
import { statusRank, type TransferStatus } from "#packages/contracts/transfer.ts";
import type { OutgoingMessage } from "#packages/kafka/index.ts";
import { createLogger } from "#packages/log/index.ts";
import { planWrites } from "../../transaction-command-service/src/plan.ts";
import type { LedgerAnswer } from "../src/saga/ledger-client.ts";
import { isFinal, type SagaState, type SagaTransfer } from "../src/saga/machine.ts";
import { type LedgerPort, SagaRunner, type SagaStorePort } from "../src/saga/runner.ts";
import type { DueTransfer, StoredTransfer } from "../src/saga/store.ts";

const topics = topicNames("property.");
const logger = createLogger("saga-property", "silent");

class LostAnswer extends Error {}

interface Hold {
  state: "held" | "posted" | "voided";
  amount: number;
  source: number;
  dest: number;
  source_before: number;
  dest_before: number | null;
  effects: number;
}

class ModelLedger implements LedgerPort {
  balances = new Map<number, number>();
  closed = new Set<number>();
  clearing = 0;
  holds = new Map<string, Hold>();
  /** When set, the next call loses its answer: before (0) or after (1) its effect. */
  lose: 0 | 1 | null = null;

  total(): number {
    let sum = this.clearing;
    for (const b of this.balances.values()) sum += b;
    return sum;
  }

  #maybeLose(when: 0 | 1): void {
    if (this.lose === when) {
      this.lose = null;
      throw new LostAnswer("answer lost");
    }
  }

  async hold(
    id: string,
    body: { source_user_id: number; dest_user_id: number; amount: number },
  ): Promise<LedgerAnswer> {
    this.#maybeLose(0);
    const existing = this.holds.get(id);
    if (existing !== undefined)
      return { kind: "ok", source_balance_before: existing.source_before, dest_balance_before: null };
    const balance = this.balances.get(body.source_user_id) ?? 0;
    if (balance < body.amount) return { kind: "rejected", reason: "insufficient_funds" };
    this.balances.set(body.source_user_id, balance - body.amount);
    this.clearing += body.amount;
    this.holds.set(id, {
      state: "held",
      amount: body.amount,
      source: body.source_user_id,
      dest: body.dest_user_id,
      source_before: balance,
      dest_before: null,
      effects: 1,
    });
    this.#maybeLose(1);
    return { kind: "ok", source_balance_before: balance, dest_balance_before: null };
  }

  async post(id: string): Promise<LedgerAnswer> {
    this.#maybeLose(0);
    const hold = this.holds.get(id);
    assert.ok(hold, "post of an unknown hold");
    assert.notEqual(hold.state, "voided", "post after void");
    if (hold.state === "held") {
      if (this.closed.has(hold.dest)) return { kind: "rejected", reason: "dest_unavailable" };
      const before = this.balances.get(hold.dest) ?? 0;
      this.clearing -= hold.amount;
      this.balances.set(hold.dest, before + hold.amount);
      hold.state = "posted";
      hold.dest_before = before;
      hold.effects += 1;
    }
    this.#maybeLose(1);
    return { kind: "ok", source_balance_before: hold.source_before, dest_balance_before: hold.dest_before };
  }

  async void(id: string): Promise<LedgerAnswer> {
    this.#maybeLose(0);
    const hold = this.holds.get(id);
    assert.ok(hold, "void of an unknown hold");
    assert.notEqual(hold.state, "posted", "void after post");
    if (hold.state === "held") {
      this.clearing -= hold.amount;
      this.balances.set(hold.source, (this.balances.get(hold.source) ?? 0) + hold.amount);
      hold.state = "voided";
      hold.effects += 1;
    }
    this.#maybeLose(1);
    return { kind: "ok", source_balance_before: hold.source_before, dest_balance_before: null };
  }
}

/** A claimed transfer as the store hands it to the sweep; the model's clock is this process's. */
const due = (row: StoredTransfer): DueTransfer => ({
  ...row,
  waited_ms: Date.now() - Date.parse(row.updated_at),
});

class ModelStore implements SagaStorePort {
  rows = new Map<string, StoredTransfer>();
  network: OutgoingMessage[] = [];

  async get(id: string) {
    const row = this.rows.get(id);
    return row === undefined ? null : { ...row };
  }

  async commitTransition(expected: SagaState, next: SagaTransfer, messages: OutgoingMessage[]) {
    const row = this.rows.get(next.id);
    if (row === undefined || row.state !== expected) return null;
    const updated = { ...row, ...next, attempts: 0 };
    this.rows.set(next.id, updated);
    this.network.push(...messages);
    return { ...updated };
  }

  async enqueue(messages: OutgoingMessage[]) {
    this.network.push(...messages);
  }
}

/** The record writer: real plan, model store; refuses PENDING records of "poisoned" transfers. */
class ModelWriter {
  records = new Map<string, { rank: number; status: TransferStatus }>();
  poisoned = new Set<string>();

  handle(command: RecordTransferCommand): TransferEvent {
    const id = command.snapshot.id;
    if (command.snapshot.status === "PENDING" && this.poisoned.has(id)) {
      return {
        type: "TransferRecordRejected",
        message_id: command.message_id,
        transfer_id: id,
        status: "PENDING",
        reason: "poisoned",
      };
    }
    // The real batch plan, then the store's guarded writes as records.ts performs them.
    const plan = planWrites([command]);
    for (const write of plan.writes) {
      const stored = this.records.get(write.id);
      const rank = statusRank(write.status);
      assert.ok(
        !(stored && stored.rank === 2 && rank === 2 && stored.status !== write.status),
        "the saga must never ask for conflicting final statuses",
      );
      if (!stored || stored.rank < rank) this.records.set(write.id, { rank, status: write.status });
    }
    assert.equal(plan.outcomes[0]?.kind, "recorded");
    return {
      type: "TransferRecorded",
      message_id: command.message_id,
      transfer_id: id,
      status: command.snapshot.status,
      snapshot: command.snapshot,
    };
  }
}

type Step =
  | { op: "deliver"; pick: number; duplicate: boolean; drop: boolean }
  | { op: "sweep"; pick: number }
  | { op: "lose"; when: 0 | 1 }
  | { op: "close_wallet"; user: number }
  | { op: "poison"; pick: number };

const stepArb: fc.Arbitrary<Step> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      op: fc.constant("deliver" as const),
      pick: fc.nat(),
      duplicate: fc.boolean(),
      drop: fc.boolean(),
    }),
  },
  { weight: 3, arbitrary: fc.record({ op: fc.constant("sweep" as const), pick: fc.nat() }) },
  {
    weight: 1,
    arbitrary: fc.record({ op: fc.constant("lose" as const), when: fc.constantFrom(0 as const, 1 as const) }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ op: fc.constant("close_wallet" as const), user: fc.integer({ min: 1, max: 4 }) }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("poison" as const), pick: fc.nat() }) },
);

const transferArb = fc.record({
  source: fc.integer({ min: 1, max: 4 }),
  dest: fc.integer({ min: 1, max: 4 }),
  amount: fc.integer({ min: 1, max: 80 }),
});

async function runScenario(input: {
  transfers: Array<{ source: number; dest: number; amount: number }>;
  steps: Step[];
  deadline_ms: number;
}): Promise<void> {
  const ledger = new ModelLedger();
  for (let user = 1; user <= 4; user++) ledger.balances.set(user, 100);
  const total = ledger.total();
  const store = new ModelStore();
  const writer = new ModelWriter();
  const runner = new SagaRunner(store, ledger, topics, logger, {
    step_timeout_ms: 1,
    record_resend_ms: 1,
    record_deadline_ms: input.deadline_ms,
  });

  const check = () => {
    assert.equal(ledger.total(), total, "I1: money was created or destroyed");
    for (const [user, balance] of ledger.balances) assert.ok(balance >= 0, `I2: user ${user} is negative`);
    let inFlight = 0;
    for (const hold of ledger.holds.values()) if (hold.state === "held") inFlight += hold.amount;
    assert.equal(ledger.clearing, inFlight, "clearing must equal the holds in flight");
  };

  const swallow = async (work: () => Promise<unknown>) => {
    try {
      await work();
    } catch (error) {
      if (!(error instanceof LostAnswer)) throw error;
    }
  };

  // Requests arrive: intent first, then the inline advance (whose answer may be lost).
  const ids: string[] = [];
  for (const [i, t] of input.transfers.entries()) {
    if (t.source === t.dest) continue;
    const id = `0190b5a8-0000-7000-8000-${String(i).padStart(12, "0")}`;
    ids.push(id);
    const now = new Date(0).toISOString();
    store.rows.set(id, {
      id,
      state: "created",
      source_user_id: t.source,
      dest_user_id: t.dest,
      amount: t.amount,
      source_init_bal: null,
      dest_init_bal: null,
      failure_reason: null,
      created_at: now,
      updated_at: now,
      idempotency_key: null,
      request_fingerprint: "x",
      response_status: null,
      response_body: null,
      attempts: 0,
    });
    const row = await store.get(id);
    if (row) await swallow(() => runner.advance(row));
    check();
  }

  const deliver = async (index: number) => {
    const [message] = store.network.splice(index, 1);
    if (message === undefined) return;
    if (message.topic === topics.commands) {
      const event = writer.handle(recordTransferCommandSchema.parse(message.value));
      store.network.push({ topic: topics.events, key: event.transfer_id, value: event });
      return;
    }
    const event = message.value as TransferEvent;
    const row = await store.get(event.transfer_id);
    assert.ok(row, "event for an unknown transfer");
    const after = await runner.apply(row, {
      kind: event.type === "TransferRecorded" ? "record_written" : "record_rejected",
      status: event.status,
    });
    await swallow(() => runner.advance(after));
  };

  for (const step of input.steps) {
    if (step.op === "deliver" && store.network.length > 0) {
      const index = step.pick % store.network.length;
      const message = store.network[index];
      if (step.drop) {
        store.network.splice(index, 1); // a consumer died before committing... and the message is gone for this path
      } else {
        if (step.duplicate && message) store.network.push(message);
        await deliver(index);
      }
    } else if (step.op === "sweep" && ids.length > 0) {
      const row = await store.get(ids[step.pick % ids.length] as string);
      if (row && !isFinal(row.state)) await swallow(() => runner.recover(due(row)));
    } else if (step.op === "lose") {
      ledger.lose = step.when;
    } else if (step.op === "close_wallet") {
      ledger.closed.add(step.user);
    } else if (step.op === "poison" && ids.length > 0) {
      writer.poisoned.add(ids[step.pick % ids.length] as string);
    }
    check();
  }

  // Faults heal: deliver everything, sweep everything, until quiet.
  ledger.lose = null;
  for (let round = 0; round < 50; round++) {
    while (store.network.length > 0) await deliver(0);
    const open = [...store.rows.values()].filter((r) => !isFinal(r.state));
    if (open.length === 0) break;
    for (const row of open) await runner.recover(due(row));
    check();
  }

  for (const id of ids) {
    const row = store.rows.get(id);
    assert.ok(row && isFinal(row.state), `I4: transfer ${id} did not terminate (${row?.state})`);
    const hold = ledger.holds.get(id);
    const record = writer.records.get(id);
    if (row.state === "completed") {
      assert.equal(hold?.state, "posted", "completed transfer must have credited B");
      assert.equal(hold?.effects, 2, "I3: debit once, credit once");
      assert.equal(record?.status, "COMPLETED");
      assert.equal(row.dest_init_bal, hold?.dest_before);
    } else {
      assert.ok(hold === undefined || hold.state === "voided", "failed transfer must have refunded A");
      if (hold) assert.equal(hold.effects, 2, "I3: debit once, refund once");
      assert.equal(record?.status, "FAILED", "I5: the record says FAILED");
      assert.ok(row.failure_reason !== null);
    }
  }
}

describe("saga under duplicated, reordered and lost messages", () => {
  it("keeps I1-I4 for any interleaving", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          transfers: fc.array(transferArb, { minLength: 1, maxLength: 8 }),
          steps: fc.array(stepArb, { maxLength: 80 }),
          deadline_ms: fc.constantFrom(0, 1_000_000),
        }),
        runScenario,
      ),
      { numRuns: 300 },
    );
  });
});
