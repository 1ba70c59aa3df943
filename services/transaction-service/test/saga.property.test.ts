/**
 * Property test of the saga's orchestration: the real SagaRunner and the real record-writer
 * plan, against a model ledger and a model network that duplicates, reorders and drops
 * deliveries, loses ledger answers after the effect, refuses records and closes wallets. Lone
 * transfers take one ledger step (transfer); funded disbursement items take the two-phase path
 * (post, or a refund when the payee cannot take the credit). Ledger
 * calls can also stall (a batch waiting for a lock) and finish later, deciding then, while other
 * drivers race on the same transfer; answers can be delivered twice; wallets are topped up; and
 * balances may start near 2^53-1, where credits must leave room for every refund.
 * After every step: conservation (I1), no negative balance (I2), clearing equals the holds in
 * flight, no wallet can be refunded past 2^53-1. After the faults stop and the system drains:
 * every transfer is final (I4), its money matches its status, and no step moved money twice (I3).
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
import { AMOUNT_MAX_MINOR } from "#packages/contracts/money.ts";
import { type FailureReason, statusRank, type TransferStatus } from "#packages/contracts/transfer.ts";
import type { OutgoingMessage } from "#packages/kafka/index.ts";
import { createLogger } from "#packages/log/index.ts";
import { planWrites } from "../../transaction-command-service/src/plan.ts";
import type { LedgerAnswer } from "../src/saga/ledger-client.ts";
import { isFinal, type SagaInput, type SagaState, type SagaTransfer } from "../src/saga/machine.ts";
import { type LedgerPort, SagaRunner, type SagaStorePort } from "../src/saga/runner.ts";
import type { DueTransfer, StoredTransfer } from "../src/saga/store.ts";

const topics = topicNames("property.");
const logger = createLogger("saga-property", "silent");

class LostAnswer extends Error {}
/** A step that a stale driver sends after another settled the hold: refused, nothing moves. */
class StaleStep extends Error {}

interface Hold {
  state: "held" | "posted" | "voided";
  amount: number;
  source: number;
  dest: number;
  source_before: number;
  dest_before: number | null;
  effects: number;
}

/** A ledger call waiting (for a lock, say) until a later step lets it go on. */
interface Parked {
  resume: () => void;
  /** The driver that made the call; it finishes once the call is resumed. */
  driver?: Promise<unknown>;
}

function holdOf(t: { source: number; dest: number; amount: number }, source_before: number): Hold {
  const { source, dest, amount } = t;
  return { state: "held", amount, source, dest, source_before, dest_before: null, effects: 0 };
}

class ModelLedger implements LedgerPort {
  balances = new Map<number, number>();
  closed = new Set<number>();
  clearing = 0;
  deposited = 0n;
  holds = new Map<string, Hold>();
  /** The ledger's refusal memory (migrations/003): a refused transfer id stays refused. */
  refusals = new Map<string, FailureReason>();
  /** When set, the next call loses its answer: before (0) or after (1) its effect. */
  lose: 0 | 1 | null = null;
  /** When set, the next call parks before deciding anything. */
  stall = false;
  parked: Parked[] = [];
  #onPark: Array<() => void> = [];
  /** Every answer given, for late duplicates. */
  answers: Array<{ id: string; input: SagaInput }> = [];

  total(): bigint {
    let sum = BigInt(this.clearing);
    for (const b of this.balances.values()) sum += BigInt(b);
    return sum;
  }

  heldOut(user: number): number {
    let sum = 0;
    for (const hold of this.holds.values())
      if (hold.state === "held" && hold.source === user) sum += hold.amount;
    return sum;
  }

  /** Room rule: balance + held out + credit <= 2^53-1, so that any refund fits. */
  fits(user: number, amount: number): boolean {
    return (
      BigInt(this.balances.get(user) ?? 0) + BigInt(this.heldOut(user)) + BigInt(amount) <=
      BigInt(AMOUNT_MAX_MINOR)
    );
  }

  deposit(user: number, amount: number): void {
    if (this.closed.has(user) || !this.fits(user, amount)) return;
    this.balances.set(user, (this.balances.get(user) ?? 0) + amount);
    this.deposited += BigInt(amount);
  }

  /** Resolves once more than `count` calls are parked. */
  whenParked(count: number): Promise<void> {
    if (this.parked.length > count) return Promise.resolve();
    return new Promise((resolve) => this.#onPark.push(resolve));
  }

  async #enter(): Promise<void> {
    if (this.stall) {
      this.stall = false;
      const resumed = new Promise<void>((resume) => this.parked.push({ resume }));
      for (const notify of this.#onPark.splice(0)) notify();
      await resumed;
    }
    if (this.lose === 0) {
      this.lose = null;
      throw new LostAnswer("answer lost");
    }
  }

  #leave(id: string, answer: LedgerAnswer, input: SagaInput | null): LedgerAnswer {
    if (input !== null) this.answers.push({ id, input });
    if (this.lose === 1) {
      this.lose = null;
      throw new LostAnswer("answer lost");
    }
    return answer;
  }

  /** A disbursement item's funding (its money into clearing), done before its saga row exists. */
  fund(id: string, t: { source: number; dest: number; amount: number }): number | null {
    const balance = this.balances.get(t.source) ?? 0;
    if (balance < t.amount) return null;
    this.balances.set(t.source, balance - t.amount);
    this.clearing += t.amount;
    this.holds.set(id, { ...holdOf(t, balance), effects: 1 });
    return balance;
  }

  /** Debit and credit in one step; a credit that cannot land is refunded within it. */
  async transfer(
    id: string,
    body: { source_user_id: number; dest_user_id: number; amount: number },
  ): Promise<LedgerAnswer> {
    await this.#enter();
    const existing = this.holds.get(id);
    if (existing?.state === "held") {
      // A hold an earlier version made: the step posts it, or refunds it.
      if (this.closed.has(existing.dest) || !this.fits(existing.dest, existing.amount)) {
        this.#refund(existing);
        return this.#refused(id, "dest_unavailable");
      }
      this.#credit(existing);
    }
    if (existing !== undefined) {
      if (existing.state === "voided") return this.#refused(id, "dest_unavailable");
      return this.#transferred(id, existing);
    }
    const refused = this.refusals.get(id);
    if (refused !== undefined) return this.#refused(id, refused);
    const balance = this.balances.get(body.source_user_id) ?? 0;
    if (balance < body.amount) {
      this.refusals.set(id, "insufficient_funds");
      return this.#refused(id, "insufficient_funds");
    }
    const hold = {
      ...holdOf({ source: body.source_user_id, dest: body.dest_user_id, amount: body.amount }, balance),
      effects: 0,
    };
    this.holds.set(id, hold);
    if (this.closed.has(hold.dest) || !this.fits(hold.dest, hold.amount)) {
      hold.state = "voided";
      hold.effects = 2;
      return this.#refused(id, "dest_unavailable");
    }
    this.balances.set(hold.source, balance - hold.amount);
    this.clearing += hold.amount;
    hold.effects = 1;
    this.#credit(hold);
    return this.#transferred(id, hold);
  }

  #credit(hold: Hold): void {
    const before = this.balances.get(hold.dest) ?? 0;
    this.clearing -= hold.amount;
    this.balances.set(hold.dest, before + hold.amount);
    hold.state = "posted";
    hold.dest_before = before;
    hold.effects += 1;
  }

  #refund(hold: Hold): void {
    const balance = this.balances.get(hold.source) ?? 0;
    assert.ok(balance + hold.amount <= AMOUNT_MAX_MINOR, "a refund must always fit");
    this.clearing -= hold.amount;
    this.balances.set(hold.source, balance + hold.amount);
    hold.state = "voided";
    hold.effects += 1;
  }

  #refused(id: string, reason: FailureReason): LedgerAnswer {
    return this.#leave(id, { kind: "rejected", reason }, { kind: "transfer_rejected", reason });
  }

  #transferred(id: string, hold: Hold): LedgerAnswer {
    const dest_init_bal = hold.dest_before as number;
    return this.#leave(
      id,
      { kind: "ok", source_balance_before: hold.source_before, dest_balance_before: dest_init_bal },
      { kind: "transfer_ok", source_init_bal: hold.source_before, dest_init_bal },
    );
  }

  async post(id: string): Promise<LedgerAnswer> {
    await this.#enter();
    const hold = this.holds.get(id);
    assert.ok(hold, "post of an unknown hold");
    if (hold.state === "voided") throw new StaleStep("hold_voided");
    if (hold.state === "held") {
      if (this.closed.has(hold.dest) || !this.fits(hold.dest, hold.amount)) {
        return this.#leave(
          id,
          { kind: "rejected", reason: "dest_unavailable" },
          { kind: "post_rejected", reason: "dest_unavailable" },
        );
      }
      this.#credit(hold);
    }
    const dest_init_bal = hold.dest_before as number;
    return this.#leave(
      id,
      { kind: "ok", source_balance_before: hold.source_before, dest_balance_before: dest_init_bal },
      { kind: "post_ok", dest_init_bal },
    );
  }

  async void(id: string): Promise<LedgerAnswer> {
    await this.#enter();
    const hold = this.holds.get(id);
    assert.ok(hold, "void of an unknown hold");
    if (hold.state === "posted") return this.#leave(id, { kind: "already_posted" }, null);
    if (hold.state === "held") this.#refund(hold);
    return this.#leave(
      id,
      { kind: "ok", source_balance_before: hold.source_before, dest_balance_before: null },
      { kind: "void_ok" },
    );
  }
}

/** A claimed transfer as the store hands it to the sweep; the model's clock is this process's. */
const due = (row: StoredTransfer): DueTransfer => ({
  ...row,
  waited_ms: Date.now() - Date.parse(row.updated_at),
  traceparent: null,
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
    };
  }
}

type Step =
  | { op: "deliver"; pick: number; duplicate: boolean; drop: boolean }
  | { op: "sweep"; pick: number }
  | { op: "lose"; when: 0 | 1 }
  | { op: "close_wallet"; user: number }
  | { op: "poison"; pick: number }
  | { op: "stall" }
  | { op: "resume"; pick: number }
  | { op: "deposit"; user: number; amount: number }
  | { op: "answer_again"; pick: number };

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
  { weight: 2, arbitrary: fc.record({ op: fc.constant("stall" as const) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("resume" as const), pick: fc.nat() }) },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant("deposit" as const),
      user: fc.integer({ min: 1, max: 4 }),
      amount: fc.integer({ min: 1, max: 200 }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("answer_again" as const), pick: fc.nat() }) },
);

const transferArb = fc.record({
  source: fc.integer({ min: 1, max: 4 }),
  dest: fc.integer({ min: 1, max: 4 }),
  amount: fc.integer({ min: 1, max: 80 }),
  item: fc.boolean(),
});

interface Scenario {
  /** Lone transfers, and disbursement items (`item`: funded before the saga drives them). */
  transfers: Array<{ source: number; dest: number; amount: number; item: boolean }>;
  steps: Step[];
  /** Every wallet's opening balance: small, or near 2^53-1. */
  opening: number;
}

class World {
  readonly ledger = new ModelLedger();
  readonly store = new ModelStore();
  readonly writer = new ModelWriter();
  readonly runner: SagaRunner;
  readonly ids: string[] = [];
  readonly #total: bigint;

  constructor(scenario: Pick<Scenario, "opening">) {
    for (let user = 1; user <= 4; user++) this.ledger.balances.set(user, scenario.opening);
    this.#total = this.ledger.total();
    this.runner = new SagaRunner(this.store, this.ledger, topics, logger, {
      step_timeout_ms: 1,
      record_resend_ms: 1,
    });
  }

  check(): void {
    const { ledger } = this;
    assert.equal(ledger.total(), this.#total + ledger.deposited, "I1: money was created or destroyed");
    for (const [user, balance] of ledger.balances) {
      assert.ok(balance >= 0, `I2: user ${user} is negative`);
      assert.ok(ledger.fits(user, 0), `user ${user} has no room left for their own refunds`);
    }
    let inFlight = 0;
    for (const hold of ledger.holds.values()) if (hold.state === "held") inFlight += hold.amount;
    assert.equal(ledger.clearing, inFlight, "clearing must equal the holds in flight");
  }

  /**
   * Runs one driver (a request, an event handler, a sweep) until it finishes or parks in the
   * ledger; a parked driver goes on in the background and finishes when its call is resumed.
   */
  async drive(work: () => Promise<unknown>): Promise<void> {
    // Counted before the driver starts: it may park before its first await returns.
    const parked = this.ledger.parked.length;
    await this.#follow(swallow(work), parked);
  }

  async #follow(driver: Promise<unknown>, parked: number): Promise<void> {
    await Promise.race([driver, this.ledger.whenParked(parked)]);
    const call = this.ledger.parked.at(-1);
    if (this.ledger.parked.length > parked && call !== undefined) call.driver = driver;
  }

  async resume(index: number): Promise<void> {
    const [call] = this.ledger.parked.splice(index, 1);
    if (call === undefined) return;
    const parked = this.ledger.parked.length;
    call.resume();
    if (call.driver !== undefined) await this.#follow(call.driver, parked);
  }

  /**
   * A lone transfer (state created, its one step next), or a disbursement's item: funded first
   * (its money in clearing), then driven from `recorded` (its credit next). An item the payer
   * cannot fund is left out, as the funding refuses it.
   */
  async request(
    i: number,
    t: { source: number; dest: number; amount: number; item?: boolean },
  ): Promise<void> {
    const id = first(i);
    let source_init_bal: number | null = null;
    if (t.item === true) {
      source_init_bal = this.ledger.fund(id, t);
      if (source_init_bal === null) return;
    }
    this.ids.push(id);
    const now = new Date(0).toISOString();
    this.store.rows.set(id, {
      id,
      state: t.item === true ? "recorded" : "created",
      source_user_id: t.source,
      dest_user_id: t.dest,
      amount: t.amount,
      source_init_bal,
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
    const row = await this.store.get(id);
    if (row) await this.drive(() => this.runner.advance(row));
  }

  async deliver(index: number): Promise<void> {
    const { store, writer, runner } = this;
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
    await this.drive(() => runner.advance(after));
  }

  async sweep(id: string): Promise<void> {
    const row = await this.store.get(id);
    if (row && !isFinal(row.state)) await this.drive(() => this.runner.recover(due(row)));
  }

  /** A ledger answer delivered a second time, late, to whatever state the transfer is in now. */
  async answerAgain(index: number): Promise<void> {
    const answer = this.ledger.answers[index];
    if (answer === undefined) return;
    const row = await this.store.get(answer.id);
    if (row === null) return;
    await this.drive(async () => this.runner.advance(await this.runner.apply(row, answer.input)));
  }

  /** Faults heal: resume every call, deliver everything, sweep everything, until quiet. */
  async drain(): Promise<void> {
    const { ledger, store } = this;
    ledger.lose = null;
    ledger.stall = false;
    for (let round = 0; round < 50; round++) {
      while (ledger.parked.length > 0) await this.resume(0);
      while (store.network.length > 0) await this.deliver(0);
      const open = [...store.rows.values()].filter((r) => !isFinal(r.state));
      if (open.length === 0 && ledger.parked.length === 0) break;
      for (const row of open) await this.sweep(row.id);
      this.check();
    }
  }

  /** Every transfer final, its money where its status says, each step applied once. */
  assertSettled(): void {
    for (const id of this.ids) {
      const row = this.store.rows.get(id);
      assert.ok(row && isFinal(row.state), `I4: transfer ${id} did not terminate (${row?.state})`);
      const hold = this.ledger.holds.get(id);
      const record = this.writer.records.get(id);
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
}

/** A ledger answer lost, or a step refused as stale: the driver stops, the sweep goes on. */
async function swallow(work: () => Promise<unknown>): Promise<void> {
  try {
    await work();
  } catch (error) {
    if (!(error instanceof LostAnswer) && !(error instanceof StaleStep)) throw error;
  }
}

async function runScenario(input: Scenario): Promise<void> {
  const world = new World(input);
  const { ledger, store, writer, ids } = world;

  // Requests arrive: intent first, then the inline advance (whose answer may be lost).
  for (const [i, t] of input.transfers.entries()) {
    if (t.source === t.dest) continue;
    await world.request(i, t);
    world.check();
  }

  for (const step of input.steps) {
    if (step.op === "deliver" && store.network.length > 0) {
      const index = step.pick % store.network.length;
      const message = store.network[index];
      if (step.drop) {
        store.network.splice(index, 1); // a consumer died before committing... and the message is gone for this path
      } else {
        if (step.duplicate && message) store.network.push(message);
        await world.deliver(index);
      }
    } else if (step.op === "sweep" && ids.length > 0) {
      await world.sweep(ids[step.pick % ids.length] as string);
    } else if (step.op === "lose") {
      ledger.lose = step.when;
    } else if (step.op === "close_wallet") {
      ledger.closed.add(step.user);
    } else if (step.op === "poison" && ids.length > 0) {
      writer.poisoned.add(ids[step.pick % ids.length] as string);
    } else if (step.op === "stall") {
      ledger.stall = true;
    } else if (step.op === "resume" && ledger.parked.length > 0) {
      await world.resume(step.pick % ledger.parked.length);
    } else if (step.op === "deposit") {
      ledger.deposit(step.user, step.amount);
    } else if (step.op === "answer_again" && ledger.answers.length > 0) {
      await world.answerAgain(step.pick % ledger.answers.length);
    }
    world.check();
  }

  await world.drain();
  world.assertSettled();
}

const NEAR_MAX = AMOUNT_MAX_MINOR - 150;
const first = (i: number) => `0190b5a8-0000-7000-8000-${String(i).padStart(12, "0")}`;

describe("saga under duplicated, reordered and lost messages", () => {
  it("keeps I1-I4 for any interleaving", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          transfers: fc.array(transferArb, { minLength: 1, maxLength: 8 }),
          steps: fc.array(stepArb, { maxLength: 80 }),
          opening: fc.constantFrom(100, NEAR_MAX),
        }),
        runScenario,
      ),
      { numRuns: 300 },
    );
  });

  it("a transfer step that waited while its retry was refused and the payer was topped up moves no money", async () => {
    const world = new World({ opening: 50 });
    const { ledger } = world;
    // 1. The step is delayed (a batch waiting for another's lock).
    ledger.stall = true;
    await world.request(0, { source: 1, dest: 2, amount: 100 });
    assert.equal(ledger.parked.length, 1);
    // 2. Its retry is refused, and the transfer ends FAILED.
    await world.sweep(first(0));
    while (world.store.network.length > 0) await world.deliver(0);
    assert.equal(world.store.rows.get(first(0))?.state, "failed");
    // 3. The payer receives a deposit; 4. the first step resumes, and answers the same refusal.
    ledger.deposit(1, 100);
    await world.resume(0);
    await world.drain();
    world.assertSettled();
    assert.equal(ledger.balances.get(1), 150, "no money left the payer");
    assert.equal(world.store.rows.get(first(0))?.failure_reason, "insufficient_funds");
    world.check();
  });

  it("a transfer whose payee has no room is refunded within its step, and retries agree", async () => {
    const world = new World({ opening: NEAR_MAX });
    const { ledger } = world;
    ledger.lose = 1;
    await world.request(0, { source: 1, dest: 2, amount: 151 });
    assert.equal(world.store.rows.get(first(0))?.state, "created", "the answer was lost");
    assert.equal(ledger.holds.get(first(0))?.state, "voided");
    await world.drain();
    world.assertSettled();
    assert.equal(world.store.rows.get(first(0))?.failure_reason, "dest_unavailable");
    assert.equal(ledger.balances.get(1), NEAR_MAX);
  });

  it("an item's refund that finds the hold posted by a late credit completes the item", async () => {
    // Near the ceiling: B has room for one 80 credit, not two.
    const world = new World({ opening: NEAR_MAX });
    const { ledger, store } = world;
    const deliverAll = async (id: string) => {
      for (let i = 0; i < store.network.length; )
        if (store.network[i]?.key === id) await world.deliver(i);
        else i++;
    };
    /** Fund item i; its credit stalls (the last parked call). */
    const debitOnly = async (i: number, t: { source: number; dest: number; amount: number }) => {
      ledger.stall = true;
      await world.request(i, { ...t, item: true });
    };
    // Transfer 0 completes: B now has room for one more 80 credit only once B's own hold leaves.
    await world.request(0, { source: 1, dest: 2, amount: 80 });
    await deliverAll(first(0));
    assert.equal(store.rows.get(first(0))?.state, "completed");
    await debitOnly(2, { source: 2, dest: 3, amount: 80 }); // B's hold: parked[0], its credit
    await debitOnly(1, { source: 1, dest: 2, amount: 80 }); // parked[1], the credit to B
    assert.equal(ledger.parked.length, 2);
    // A retry of the credit finds no room: the transfer moves to refunding, and its driver dies
    // before the refund.
    const refused = await ledger.post(first(1));
    assert.equal(refused.kind, "rejected");
    const recorded = await store.get(first(1));
    assert.equal(recorded?.state, "recorded");
    assert.ok(recorded !== null);
    await world.runner.apply(recorded, { kind: "post_rejected", reason: "dest_unavailable" });
    assert.equal(store.rows.get(first(1))?.state, "refunding");
    // B pays out (transfer 2 completes), making room; the stalled credit goes through, its answer lost.
    await world.resume(0);
    await deliverAll(first(2));
    assert.equal(store.rows.get(first(2))?.state, "completed");
    ledger.lose = 1;
    await world.resume(0);
    assert.equal(ledger.holds.get(first(1))?.state, "posted");
    // The refund is retried: the ledger says posted, and the transfer completes.
    await world.sweep(first(1));
    await world.drain();
    world.assertSettled();
    assert.equal(store.rows.get(first(1))?.state, "completed");
    assert.equal(store.rows.get(first(1))?.failure_reason, null);
  });
});
