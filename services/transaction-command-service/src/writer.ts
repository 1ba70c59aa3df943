/**
 * The Kafka handler of transaction-command-service: RecordTransfer commands in, records in
 * MongoDB, TransferRecorded / TransferRecordRejected events out. Offsets are committed by the
 * consumer only after this returns, i.e. after the records and the events are durable.
 *
 * Failure policy:
 * - a message that is not a valid command can never succeed: dead letters at once;
 * - MongoDB unreachable: an outage, not the message's fault; the batch is retried (uncounted)
 *   until the store is back, so nothing is dead-lettered because an engine restarted;
 * - MongoDB reachable but one command keeps failing: counted, retried with backoff, and after
 *   max_attempts it goes to dead letters with its reason, and the saga is told (Rejected) so it
 *   can refund.
 */
import { randomUUID } from "node:crypto";
import type { Db } from "mongodb";
import {
  type RecordTransferCommand,
  recordTransferCommandSchema,
  type TopicNames,
  type TransferEvent,
} from "#packages/contracts/messages.ts";
import {
  type ConsumedMessage,
  deadLetterFor,
  type JsonProducer,
  type OutgoingMessage,
} from "#packages/kafka/index.ts";
import type { Logger } from "#packages/log/index.ts";
import { type CrashHook, noCrashes } from "#packages/runtime/faults.ts";
import { type Outcome, planWrites } from "./plan.ts";
import { applySnapshots } from "./records.ts";

export interface Faults {
  /** Test hook (only with FAULT_INJECTION=true): PENDING records of these payers are refused for good. */
  reject_pending_for_source_user_ids: Set<number>;
}

export interface WriterDeps {
  db: Db;
  producer: JsonProducer;
  topics: TopicNames;
  logger: Logger;
  faults: Faults;
  max_attempts: number;
  service: string;
  crashes?: CrashHook;
  /** Drop and reopen the store's connections (a pooled connection can stay broken after FerretDB restarts). */
  resetStore?: () => Promise<void>;
}

/** After this many failed batches in a row on network errors, the writer reopens its store connections. */
const NETWORK_FAILURES_BEFORE_RESET = 3;

function isNetworkError(error: unknown): boolean {
  const name = (error as Error).name ?? "";
  const message = (error as Error).message ?? "";
  return (
    /MongoNetwork|MongoServerSelection|MongoNotConnected/.test(name) ||
    /connection \d+ to .* (closed|timed out)/.test(message)
  );
}

interface Parsed {
  message: ConsumedMessage;
  command: RecordTransferCommand;
}

const ATTEMPTS_TRACKED_MAX = 10_000;

export function createRecordWriter(deps: WriterDeps) {
  const attempts = new Map<string, number>();
  let networkFailures = 0;

  const deadLetter = (message: ConsumedMessage, reason: string, tries: number): OutgoingMessage =>
    deadLetterFor(deps.topics.deadLetters, deps.service, message, reason, tries);

  const event = (value: TransferEvent): OutgoingMessage => ({
    topic: deps.topics.events,
    key: value.transfer_id,
    value,
  });

  const recorded = (command: RecordTransferCommand): OutgoingMessage =>
    event({
      type: "TransferRecorded",
      message_id: randomUUID(),
      transfer_id: command.snapshot.id,
      status: command.snapshot.status,
      snapshot: command.snapshot,
    });

  const rejected = (command: RecordTransferCommand, reason: string): OutgoingMessage =>
    event({
      type: "TransferRecordRejected",
      message_id: randomUUID(),
      transfer_id: command.snapshot.id,
      status: command.snapshot.status,
      reason,
    });

  async function storeReachable(): Promise<boolean> {
    try {
      await deps.db.command({ ping: 1 });
      return true;
    } catch {
      return false;
    }
  }

  async function applyAll(parsed: Parsed[]): Promise<Outcome[]> {
    const plan = planWrites(parsed.map((p) => p.command));
    const conflicts = await applySnapshots(deps.db, plan.writes);
    return plan.outcomes.map((outcome) => {
      const reason = conflicts.get(outcome.command.snapshot.id);
      const final = outcome.command.snapshot.status !== "PENDING";
      return outcome.kind === "recorded" && final && reason !== undefined
        ? { kind: "conflict", command: outcome.command, reason }
        : outcome;
    });
  }

  return async function handleBatch(messages: ConsumedMessage[]): Promise<void> {
    const out: OutgoingMessage[] = [];
    const valid: Parsed[] = [];

    for (const message of messages) {
      let json: unknown;
      try {
        json = JSON.parse(message.value);
      } catch {
        out.push(deadLetter(message, "value is not JSON", 1));
        continue;
      }
      const result = recordTransferCommandSchema.safeParse(json);
      if (!result.success) {
        out.push(deadLetter(message, `not a valid RecordTransfer command: ${result.error.message}`, 1));
        continue;
      }
      const command = result.data;
      if (
        command.snapshot.status === "PENDING" &&
        deps.faults.reject_pending_for_source_user_ids.has(command.snapshot.source_user_id)
      ) {
        const reason = "injected fault: record refused";
        out.push(deadLetter(message, reason, 1), rejected(command, reason));
        continue;
      }
      valid.push({ message, command });
    }

    let outcomes: Array<{ parsed: Parsed; outcome: Outcome }> = [];
    try {
      const all = await applyAll(valid).catch(async (error: unknown) => {
        if (isNetworkError(error)) {
          networkFailures += 1;
          if (networkFailures >= NETWORK_FAILURES_BEFORE_RESET && deps.resetStore) {
            deps.logger.warn(
              { err: error, failures: networkFailures },
              "store connections keep failing; reopening them",
            );
            networkFailures = 0;
            await deps
              .resetStore()
              .catch((reset: unknown) => deps.logger.warn({ err: reset }, "store reset failed"));
          }
          throw error; // the batch is retried as a whole, uncounted: the store, not the message, failed
        }
        throw error;
      });
      networkFailures = 0;
      outcomes = all.map((outcome, i) => ({ parsed: valid[i] as Parsed, outcome }));
    } catch (batchError) {
      if (isNetworkError(batchError) || !(await storeReachable())) throw batchError;
      // The store answers but the batch failed: isolate the command that fails.
      outcomes = [];
      for (const parsed of valid) {
        const key = `${parsed.message.topic}:${parsed.message.partition}:${parsed.message.offset}`;
        try {
          const [outcome] = await applyAll([parsed]);
          if (outcome === undefined) throw new Error("invariant: one command yields one outcome");
          outcomes.push({ parsed, outcome });
          attempts.delete(key);
        } catch (error) {
          if (!(await storeReachable())) throw error;
          const tries = (attempts.get(key) ?? 0) + 1;
          if (tries < deps.max_attempts) {
            if (attempts.size >= ATTEMPTS_TRACKED_MAX) attempts.clear();
            attempts.set(key, tries);
            throw error;
          }
          attempts.delete(key);
          const reason = `record write failed ${tries} times: ${(error as Error).message}`;
          deps.logger.error({ transfer_id: parsed.command.snapshot.id, reason }, "record dead-lettered");
          out.push(deadLetter(parsed.message, reason, tries), rejected(parsed.command, reason));
        }
      }
    }

    for (const { parsed, outcome } of outcomes) {
      if (outcome.kind === "recorded") {
        out.push(recorded(outcome.command));
      } else {
        deps.logger.error(
          { transfer_id: outcome.command.snapshot.id, reason: outcome.reason },
          "conflicting record",
        );
        out.push(deadLetter(parsed.message, outcome.reason, 1), rejected(outcome.command, outcome.reason));
      }
    }
    (deps.crashes ?? noCrashes).reached("after_record_write");
    await deps.producer.send(out);
  };
}
