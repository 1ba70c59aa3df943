/**
 * Drives transfers through the state machine. Any instance may advance any transfer at any
 * time (the POST handler, the Kafka event handler, the recovery sweep): every ledger step is
 * idempotent by transfer id and every transition is a compare-and-set, so concurrent or
 * repeated drivers converge on the same result and money moves at most once per step.
 */
import { randomUUID } from "node:crypto";
import type { TopicNames } from "#packages/contracts/messages.ts";
import type { TransferRecord, TransferSnapshot } from "#packages/contracts/transfer.ts";
import type { OutgoingMessage } from "#packages/kafka/index.ts";
import type { Logger } from "#packages/log/index.ts";
import { assert, InvariantError } from "#packages/runtime/assert.ts";
import { type CrashHook, noCrashes } from "#packages/runtime/faults.ts";
import { injectKafkaHeaders } from "#packages/tracing/carriers.ts";
import type { LedgerAnswer, LedgerClient } from "./ledger-client.ts";
import {
  awaitedRecordStatus,
  nextAction,
  publicStatus,
  recordOf,
  type SagaInput,
  type SagaTransfer,
  snapshotOf,
  transition,
} from "./machine.ts";
import type { DueTransfer, SagaStore, StoredTransfer } from "./store.ts";

export interface SagaTimings {
  /** How long a ledger step may take before the sweep retries it. */
  step_timeout_ms: number;
  /** How long to wait for the record writer's answer before sending the command again. */
  record_resend_ms: number;
}

/** What the runner needs from its store and its ledger (the property tests supply models). */
export type SagaStorePort = Pick<SagaStore, "get" | "commitTransition" | "enqueue">;
/** The answer a request gets for a transfer in a given state (http.ts's responseFor). */
export type RespondWith = (transfer: SagaTransfer) => { status: number; body: unknown };
export type LedgerPort = Pick<LedgerClient, "transfer" | "post" | "void">;

export class SagaRunner {
  readonly #store: SagaStorePort;
  readonly #ledger: LedgerPort;
  readonly #topics: TopicNames;
  readonly #logger: Logger;
  readonly #timings: SagaTimings;
  /**
   * Told about every committed transition that changes what a client sees (the first one, and
   * each change of public status), so the read cache is written through at once: a client sees
   * COMPLETED as soon as the money has moved, not one record round trip later.
   */
  onChange: (snapshot: TransferSnapshot) => void = () => {};
  /** Told about every committed transition (metrics count them). */
  onTransition: (transfer: StoredTransfer) => void = () => {};
  /** Fault tests: die between a ledger effect and its transition. */
  crashes: CrashHook = noCrashes;

  constructor(
    store: SagaStorePort,
    ledger: LedgerPort,
    topics: TopicNames,
    logger: Logger,
    timings: SagaTimings,
  ) {
    this.#store = store;
    this.#ledger = ledger;
    this.#topics = topics;
    this.#logger = logger;
    this.#timings = timings;
  }

  recordCommand(snapshot: TransferRecord): OutgoingMessage {
    return {
      topic: this.#topics.commands,
      key: snapshot.id,
      value: { type: "RecordTransfer", message_id: randomUUID(), snapshot },
      // The step's trace, taken now: the outbox row is written in a statement shared with others.
      headers: injectKafkaHeaders(),
    };
  }

  /**
   * Feed one input to a transfer and persist the result. Returns the transfer as it stands
   * afterwards (unchanged if the input did not apply).
   */
  async apply(transfer: StoredTransfer, input: SagaInput, respond?: RespondWith): Promise<StoredTransfer> {
    let current = transfer;
    for (let attempt = 0; attempt < 5; attempt++) {
      // This clock only stamps the record's snapshot; the row's times, and every due time and
      // deadline, are PostgreSQL's (store.ts).
      const step = transition(current, input, new Date().toISOString());
      if (step === null) return current;
      const messages = step.record === null ? [] : [this.recordCommand(step.record)];
      // A ledger step is retried soon; a wait on the record writer is given longer before the
      // command is sent again (a broker or consumer restart takes seconds, not milliseconds).
      const wait_ms =
        awaitedRecordStatus(step.next.state) === null
          ? this.#timings.step_timeout_ms
          : this.#timings.record_resend_ms;
      // The request's answer is kept with the transition that decides the status (a lone
      // transfer's first; an item's after its credit or refund). A drive that ends PENDING (the
      // ledger did not answer in time) keeps its answer afterwards (idempotent-submission.ts).
      const response =
        respond === undefined || publicStatus(step.next.state) === "PENDING" ? null : respond(step.next);
      const committed = await this.#store.commitTransition(
        current.state,
        step.next,
        messages,
        wait_ms,
        response,
      );
      if (committed !== null) {
        this.onTransition(committed);
        this.#logger.debug(
          { transfer_id: current.id, from: current.state, to: committed.state },
          "saga transition",
        );
        if (current.state === "created" || publicStatus(current.state) !== publicStatus(committed.state)) {
          this.onChange(snapshotOf(committed));
        }
        return committed;
      }
      const reloaded = await this.#store.get(current.id);
      assert(reloaded !== null, `transfer ${current.id} disappeared`);
      current = reloaded;
    }
    throw new Error(`transfer ${transfer.id}: too much contention applying ${input.kind}`);
  }

  /**
   * Perform ledger steps until the transfer waits on the record writer or is final (a lone
   * transfer: one step; a disbursement's item: its credit, and its refund if refused). Throws if
   * the ledger does not answer; the transfer then stays where it is and the sweep retries it.
   * `respond` (the POST handler's) gives the request's answer for a state, kept with the
   * transition that decides the public status (COMPLETED or FAILED), so a final answer costs no
   * statement of its own.
   */
  async advance(transfer: StoredTransfer, respond?: RespondWith): Promise<StoredTransfer> {
    let current = transfer;
    for (let steps = 0; steps < 4; steps++) {
      const action = nextAction(current.state);
      let answer: LedgerAnswer;
      if (action === "transfer") {
        answer = await this.#ledger.transfer(current.id, {
          source_user_id: current.source_user_id,
          dest_user_id: current.dest_user_id,
          amount: current.amount,
        });
        this.crashes.reached("after_transfer");
        current = await this.apply(current, transferInput(current.id, answer), respond);
        // The ledger keeps a refusal final for its transfer id, so a transfer that moved money
        // cannot meet a saga that ended it FAILED; if it ever did, B holds money of a FAILED
        // transfer: stop and say so, never retry or hide it.
        if (answer.kind === "ok" && publicStatus(current.state) !== "COMPLETED") {
          throw new InvariantError(`transfer ${current.id} moved money but the saga is ${current.state}`);
        }
      } else if (action === "post") {
        answer = await this.#ledger.post(current.id);
        this.crashes.reached("after_post");
        current = await this.apply(current, postInput(current.id, answer), respond);
      } else if (action === "void") {
        answer = await this.#ledger.void(current.id);
        this.crashes.reached("after_void");
        if (answer.kind === "already_posted" && current.state === "refunding") {
          // A post went through after all: ask for it again (idempotent) for the balance the
          // COMPLETED record needs, and complete the transfer.
          this.#logger.warn({ transfer_id: current.id }, "refund found the transfer credited; completing it");
          answer = await this.#ledger.post(current.id);
          current = await this.apply(current, postInput(current.id, answer), respond);
          continue;
        }
        assert(answer.kind === "ok", `void of ${current.id} refused (${answer.kind})`);
        current = await this.apply(current, { kind: "void_ok" }, respond);
      } else {
        return current;
      }
    }
    return current;
  }

  /**
   * The recovery sweep's treatment of one overdue transfer: its ledger step again, or its final
   * record's command again. How long it has waited is PostgreSQL's measure (DueTransfer.waited_ms).
   */
  async recover(transfer: DueTransfer): Promise<void> {
    if (awaitedRecordStatus(transfer.state) === null) {
      // A debited transfer whose credit is late: list it (PENDING) while the credit is retried.
      // The writer never moves a record back, so this is harmless if the credit then lands.
      if (nextAction(transfer.state) === "post")
        await this.#store.enqueue([this.recordCommand(recordOf(transfer))]);
      await this.advance(transfer);
      return;
    }
    // The command may have been lost with a crashed consumer's uncommitted batch, or is still
    // queued behind an outage: send it again (the writer is idempotent).
    this.#logger.info(
      {
        transfer_id: transfer.id,
        state: transfer.state,
        attempts: transfer.attempts,
        waited_ms: Math.round(transfer.waited_ms),
      },
      "re-sending record command",
    );
    await this.#store.enqueue([this.recordCommand(recordOf(transfer))]);
  }
}

function transferInput(id: string, answer: LedgerAnswer): SagaInput {
  if (answer.kind === "rejected") return { kind: "transfer_rejected", reason: answer.reason };
  assert(answer.kind === "ok", `transfer of ${id} answered ${answer.kind}`);
  assert(answer.dest_balance_before !== null, `transfer of ${id} answered without a destination balance`);
  return {
    kind: "transfer_ok",
    source_init_bal: answer.source_balance_before,
    dest_init_bal: answer.dest_balance_before,
  };
}

function postInput(id: string, answer: LedgerAnswer): SagaInput {
  if (answer.kind === "rejected") return { kind: "post_rejected", reason: answer.reason };
  assert(answer.kind === "ok", `post of ${id} answered ${answer.kind}`);
  assert(answer.dest_balance_before !== null, `post of ${id} answered without a destination balance`);
  return { kind: "post_ok", dest_init_bal: answer.dest_balance_before };
}
