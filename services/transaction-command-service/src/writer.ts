/**
 * The Kafka handler of transaction-command-service: RecordTransfer commands in, records in
 * MongoDB, TransferRecorded / TransferRecordRejected events out. Offsets are committed by the
 * consumer only after this returns, i.e. after the records and the events are durable.
 *
 * Failure policy:
 * - a message that is not a valid command can never succeed: dead letters at once;
 * - MongoDB unreachable (it does not answer a ping): an outage, not the message's fault; the
 *   batch is retried (uncounted) until the store is back, so nothing is dead-lettered because
 *   an engine restarted;
 * - writes that time out while MongoDB answers pings: a command may be too costly for the
 *   store. After a repeated timeout the batch is halved (kept across retries), down to one
 *   command, which then counts attempts like any failing command;
 * - MongoDB reachable but one command keeps failing: counted (by the command, not by where it
 *   sits in the batch), retried with backoff, and after attempts_max it goes to dead letters
 *   with its reason, and the saga is told (Rejected) so it can refund. One that breaks an
 *   invariant (InvariantError: a bug no retry fixes) goes to dead letters at once.
 */
import { randomUUID } from "node:crypto";
import type { Db } from "mongodb";
import {
  type RecordCommand,
  type RecordDisbursementCommand,
  type RecordEvent,
  type RecordTransferCommand,
  recordCommandSchema,
  type TopicNames,
  type TransfersRecordedEvent,
} from "#packages/contracts/messages.ts";
import {
  type ConsumedMessage,
  deadLetterFor,
  type JsonProducer,
  type OutgoingMessage,
} from "#packages/kafka/index.ts";
import type { Logger } from "#packages/log/index.ts";
import type { Metrics } from "#packages/metrics/index.ts";
import { isMongoUnavailable } from "#packages/records/index.ts";
import { InvariantError } from "#packages/runtime/assert.ts";
import { type CrashHook, noCrashes } from "#packages/runtime/faults.ts";
import {
  contextFromKafkaHeaders,
  contextFromRow,
  injectKafkaHeaders,
  rowFromContext,
  withSpan,
} from "#packages/tracing/index.ts";
import { applyDisbursementSnapshots } from "./disbursement-records.ts";
import { type Outcome, planWrites } from "./plan.ts";
import { applySnapshots } from "./records.ts";

export interface Faults {
  /** Test hook (only with FAULT_INJECTION=true): every record of these payers is refused for good. */
  reject_records_for_source_user_ids: Set<number>;
}

export interface WriterDeps {
  db: Db;
  producer: JsonProducer;
  topics: TopicNames;
  logger: Logger;
  faults: Faults;
  attempts_max: number;
  service: string;
  crashes?: CrashHook;
  /** Drop and reopen the store's connections (a pooled connection can stay broken after FerretDB restarts). */
  resetStore?: () => Promise<void>;
  /** Bound on the failing commands whose attempts are remembered (default 10,000). */
  attempts_tracked_max?: number;
  /** Counts writes by result (written, refused, error) and the dead letters sent. */
  metrics?: Pick<Metrics, "recordWrite" | "deadLettered">;
}

/** After this many failed batches in a row on network errors, the writer reopens its store connections. */
const NETWORK_FAILURES_BEFORE_RESET = 3;
/** Timeouts in a row (store answering pings) before the failing part of a batch is halved. */
const TIMEOUTS_BEFORE_SPLIT = 2;
const ATTEMPTS_TRACKED_MAX = 10_000;

function isNetworkError(error: unknown): boolean {
  return (
    isMongoUnavailable(error) ||
    /connection \d+ to .* (closed|timed out)/.test((error as Error).message ?? "")
  );
}

/**
 * A client that is closed: a reset whose reconnect failed (the store still down) leaves it so, and
 * it never opens by itself, so it is reopened at the next failure rather than after a few.
 */
function isClosedClient(error: unknown): boolean {
  return /MongoTopologyClosed|MongoNotConnected|MongoPoolClosed/.test((error as Error).name ?? "");
}

/** A write that did not finish in time (as opposed to a connection that broke or was refused). */
function isTimeout(error: unknown): boolean {
  const name = (error as Error).name ?? "";
  const message = (error as Error).message ?? "";
  return (
    /MongoNetworkTimeout|MongoOperationTimeout/.test(name) ||
    /connection \d+ to .* timed out|operation exceeded time limit/i.test(message)
  );
}

/** One command to apply: a RecordTransfers pack is read as one RecordTransfer per snapshot. */
type SingleCommand = RecordTransferCommand | RecordDisbursementCommand;

interface Parsed {
  /** The command's own message (for a pack's snapshot, a message of that one command). */
  message: ConsumedMessage;
  command: SingleCommand;
  /** The pack it came in (its message_id), answered by one TransfersRecorded. */
  pack?: string;
  /** Its pack's records come from several traces: its answer names its own (see unpack). */
  own_trace?: boolean;
}

interface Applied {
  parsed: Parsed;
  outcome: Outcome | { kind: "recorded"; command: RecordDisbursementCommand };
}

type ParsedTransfer = Parsed & { command: RecordTransferCommand };
const isTransfer = (parsed: Parsed): parsed is ParsedTransfer => parsed.command.type === "RecordTransfer";

/** What one batch sends, and the commands it gives up on (forgotten once the letters are sent). */
interface BatchOut {
  messages: OutgoingMessage[];
  given_up: string[];
}

/** A command's failures are counted by what it asks for, so a redelivery at another offset keeps its count. */
function attemptKey(command: SingleCommand): string {
  const step = command.type === "RecordTransfer" ? command.snapshot.status : `v${command.snapshot.version}`;
  return `${command.snapshot.id.toLowerCase()}:${step}`;
}

function chunksOf<T>(items: T[], size: number): T[][] {
  const chunks: T[][] = [];
  for (let i = 0; i < items.length; i += size) chunks.push(items.slice(i, i + size));
  return chunks;
}

export function createRecordWriter(deps: WriterDeps) {
  const attempts_tracked_max = deps.attempts_tracked_max ?? ATTEMPTS_TRACKED_MAX;
  const attempts = new Map<string, number>();
  let networkFailures = 0;
  // Bisection state, kept across the consumer's retries of one batch: commands are written in
  // chunks of at most chunk_max; a chunk that keeps timing out halves it. Reset once a whole
  // batch went through.
  let chunk_max = Number.POSITIVE_INFINITY;
  let timeoutsInARow = 0;

  /** One more failure of this command; the oldest tracked command is forgotten first when full. */
  function countFailure(command: SingleCommand): number {
    const key = attemptKey(command);
    const tries = (attempts.get(key) ?? 0) + 1;
    attempts.delete(key);
    if (attempts.size >= attempts_tracked_max) {
      const oldest = attempts.keys().next().value;
      if (oldest !== undefined) attempts.delete(oldest);
    }
    attempts.set(key, tries);
    return tries;
  }

  /** Broken or stuck connections: after a few in a row, reopen them (a pool can stay broken after a restart). */
  async function noteNetworkFailure(error: unknown): Promise<void> {
    if (!isNetworkError(error)) return;
    networkFailures += isClosedClient(error) ? NETWORK_FAILURES_BEFORE_RESET : 1;
    if (networkFailures < NETWORK_FAILURES_BEFORE_RESET || !deps.resetStore) return;
    deps.logger.warn(
      { err: error, failures: networkFailures },
      "store connections keep failing; reopening them",
    );
    networkFailures = 0;
    await deps.resetStore().catch((reset: unknown) => deps.logger.warn({ err: reset }, "store reset failed"));
  }

  /** One command failed while the store answers: retry it later, or give up on it for good. */
  function failOne(parsed: Parsed, error: unknown, out: BatchOut): void {
    const tries = countFailure(parsed.command);
    // A broken invariant is a bug that no retry fixes: given up on at once, like bad input.
    if (tries < deps.attempts_max && !(error instanceof InvariantError)) throw error;
    // Still counted until its letter is sent: if this batch fails later on, a retry gives up at once.
    out.given_up.push(attemptKey(parsed.command));
    const reason = `record write failed ${tries} times: ${(error as Error).message}`;
    deps.logger.error({ transfer_id: parsed.command.snapshot.id, reason }, "record dead-lettered");
    out.messages.push(deadLetterFor(deps.topics.deadLetters, deps.service, parsed.message, reason, tries));
    // The saga refunds a transfer whose record cannot be written; a batch record has no step to undo.
    if (isTransfer(parsed)) {
      // Outside the record's span (the write failed before one began): its trace still goes on.
      const headers = injectKafkaHeaders({}, contextFromKafkaHeaders(parsed.message.headers));
      out.messages.push({ ...rejectedMessage(deps.topics, parsed.command, reason), headers });
    }
  }

  /** A chunk of several commands timed out while the store answers: halve it once it repeats. */
  function splitOnRepeat(chunk: Parsed[], error: unknown): never {
    timeoutsInARow += 1;
    if (timeoutsInARow >= TIMEOUTS_BEFORE_SPLIT) {
      timeoutsInARow = 0;
      chunk_max = Math.ceil(chunk.length / 2);
      deps.logger.warn({ err: error, chunk_max }, "record writes keep timing out; halving the batch");
    }
    throw error;
  }

  async function applyChunk(chunk: Parsed[], out: BatchOut): Promise<Applied[]> {
    try {
      const applied = await applyAll(deps.db, chunk);
      networkFailures = 0;
      for (const { parsed } of applied) attempts.delete(attemptKey(parsed.command));
      return applied;
    } catch (error) {
      for (const _ of chunk) deps.metrics?.recordWrite("error");
      await noteNetworkFailure(error);
      // An outage (no ping, or a connection that broke) is retried as a whole, uncounted.
      if (!(await storeReachable(deps.db)) || (isNetworkError(error) && !isTimeout(error))) throw error;
      if (chunk.length === 1) {
        failOne(chunk[0] as Parsed, error, out);
        return [];
      }
      if (isTimeout(error)) splitOnRepeat(chunk, error);
      return isolate(chunk, out);
    }
  }

  /** The store answers but the chunk failed quickly: find the command that fails, one by one. */
  async function isolate(chunk: Parsed[], out: BatchOut): Promise<Applied[]> {
    const applied: Applied[] = [];
    for (const parsed of chunk) applied.push(...(await applyChunk([parsed], out)));
    return applied;
  }

  return async function handleBatch(messages: ConsumedMessage[]): Promise<void> {
    const out: BatchOut = { messages: [], given_up: [] };
    const valid = parseAll(deps, messages, out);

    const outcomes: Applied[] = [];
    for (const chunk of chunksOf(valid, chunk_max)) outcomes.push(...(await applyChunk(chunk, out)));
    chunk_max = Number.POSITIVE_INFINITY;
    timeoutsInARow = 0;

    await addReplies(deps, outcomes, out);
    (deps.crashes ?? noCrashes).reached("after_record_write");
    await deps.producer.send(out.messages);
    for (const key of out.given_up) attempts.delete(key);
    countSent(deps, outcomes, out.messages);
  };
}

// Made inside the command's span (replyInTrace): the event continues the saga's trace.
function eventMessage(topics: WriterDeps["topics"], value: RecordEvent): OutgoingMessage {
  return {
    topic: topics.events,
    key: eventKey(value),
    value,
    headers: injectKafkaHeaders(),
  };
}

function eventKey(value: RecordEvent): string {
  if (value.type === "DisbursementRecorded") return value.disbursement_id;
  if (value.type === "TransfersRecorded") return value.records[0]?.transfer_id ?? "";
  return value.transfer_id;
}

function recordedMessage(topics: WriterDeps["topics"], command: SingleCommand): OutgoingMessage {
  return command.type === "RecordDisbursement"
    ? eventMessage(topics, {
        type: "DisbursementRecorded",
        message_id: randomUUID(),
        disbursement_id: command.snapshot.id,
        version: command.snapshot.version,
      })
    : eventMessage(topics, {
        type: "TransferRecorded",
        message_id: randomUUID(),
        transfer_id: command.snapshot.id,
        status: command.snapshot.status,
      });
}

function rejectedMessage(
  topics: WriterDeps["topics"],
  command: RecordTransferCommand,
  reason: string,
): OutgoingMessage {
  return eventMessage(topics, {
    type: "TransferRecordRejected",
    message_id: randomUUID(),
    transfer_id: command.snapshot.id,
    status: command.snapshot.status,
    reason,
  });
}

async function storeReachable(db: Db): Promise<boolean> {
  try {
    await db.command({ ping: 1 });
    return true;
  } catch {
    return false;
  }
}

/** Disbursement records first (nothing waits on them), then the transfers'. */
async function applyAll(db: Db, parsed: Parsed[]): Promise<Applied[]> {
  const batches = parsed.filter((p) => p.command.type === "RecordDisbursement");
  await applyDisbursementSnapshots(
    db,
    batches.map((p) => (p.command as RecordDisbursementCommand).snapshot),
  );
  const applied = await applyTransfers(db, parsed.filter(isTransfer));
  for (const p of batches)
    applied.push({
      parsed: p,
      outcome: { kind: "recorded", command: p.command as RecordDisbursementCommand },
    });
  return applied;
}

async function applyTransfers(db: Db, parsed: ParsedTransfer[]): Promise<Applied[]> {
  const plan = planWrites(parsed.map((p) => p.command));
  const conflicts = await applySnapshots(db, plan.writes);
  return plan.outcomes.map((outcome, i) => {
    const reason = conflicts.get(outcome.command.snapshot.id);
    const final = outcome.command.snapshot.status !== "PENDING";
    return {
      parsed: parsed[i] as Parsed,
      outcome:
        outcome.kind === "recorded" && final && reason !== undefined
          ? { kind: "conflict", command: outcome.command, reason }
          : outcome,
    };
  });
}

/** Commands that can never succeed (unreadable, or refused by an injected fault) are given up on at once. */
function parseAll(deps: WriterDeps, messages: ConsumedMessage[], out: BatchOut): Parsed[] {
  const deadLetter = (message: ConsumedMessage, reason: string, tries: number): OutgoingMessage =>
    deadLetterFor(deps.topics.deadLetters, deps.service, message, reason, tries);
  const valid: Parsed[] = [];
  for (const message of messages) {
    let json: unknown;
    try {
      json = JSON.parse(message.value);
    } catch {
      out.messages.push(deadLetter(message, "value is not JSON", 1));
      continue;
    }
    const result = recordCommandSchema.safeParse(json);
    if (!result.success) {
      out.messages.push(deadLetter(message, `not a valid record command: ${result.error.message}`, 1));
      continue;
    }
    for (const parsed of unpack(message, result.data)) {
      const command = parsed.command;
      if (
        command.type === "RecordTransfer" &&
        deps.faults.reject_records_for_source_user_ids.has(command.snapshot.source_user_id)
      ) {
        const reason = "injected fault: record refused";
        out.messages.push(
          deadLetter(parsed.message, reason, 1),
          rejectedMessage(deps.topics, command, reason),
        );
        continue;
      }
      valid.push(parsed);
    }
  }
  return valid;
}

/**
 * A pack's snapshots as RecordTransfer commands, each with a message of its own: one that fails
 * for good is dead-lettered alone, and replaying its letter replays that record only.
 */
function unpack(message: ConsumedMessage, command: RecordCommand): Parsed[] {
  if (command.type !== "RecordTransfers") return [{ message, command }];
  const { traceparents } = command;
  return command.snapshots.map((snapshot, i) => {
    const single: RecordTransferCommand = { type: "RecordTransfer", message_id: randomUUID(), snapshot };
    // A pack of several traces: each record's message carries its own, so its span, its answer
    // and any dead letter continue its transfer's trace, not the pack's first.
    const headers =
      traceparents === undefined ? message.headers : injectKafkaHeaders({}, contextFromRow(traceparents[i]));
    return {
      message: { ...message, key: snapshot.id, value: JSON.stringify(single), headers },
      command: single,
      pack: command.message_id,
      own_trace: traceparents !== undefined,
    };
  });
}

/**
 * Each written command's event (one TransfersRecorded per pack, for its written snapshots); a
 * conflicting one's dead letter and rejection.
 */
async function addReplies(deps: WriterDeps, outcomes: Applied[], out: BatchOut): Promise<void> {
  const packs = new Map<string, { first: Parsed; records: TransfersRecordedEvent["records"] }>();
  for (const { parsed, outcome } of outcomes) {
    if (
      outcome.kind === "recorded" &&
      parsed.pack !== undefined &&
      outcome.command.type === "RecordTransfer"
    ) {
      const pack = packs.get(parsed.pack) ?? { first: parsed, records: [] };
      const record: TransfersRecordedEvent["records"][number] = {
        transfer_id: outcome.command.snapshot.id,
        status: outcome.command.snapshot.status,
      };
      // The record's own step in its trace: the saga goes on from there for this transfer.
      if (parsed.own_trace) await replyInTrace(parsed, async () => void withTraceOf(record));
      pack.records.push(record);
      packs.set(parsed.pack, pack);
      continue;
    }
    await replyInTrace(parsed, async () => {
      if (outcome.kind === "recorded") {
        out.messages.push(recordedMessage(deps.topics, outcome.command));
      } else {
        deps.logger.error(
          { transfer_id: outcome.command.snapshot.id, reason: outcome.reason },
          "conflicting record",
        );
        out.messages.push(
          deadLetterFor(deps.topics.deadLetters, deps.service, parsed.message, outcome.reason, 1),
          rejectedMessage(deps.topics, outcome.command, outcome.reason),
        );
      }
    });
  }
  for (const { first, records } of packs.values()) {
    await replyInTrace(first, async () => {
      out.messages.push(
        eventMessage(deps.topics, { type: "TransfersRecorded", message_id: randomUUID(), records }),
      );
    });
  }
}

/** The active context, as the trace the record's answer names (none: left out). */
function withTraceOf(record: TransfersRecordedEvent["records"][number]): void {
  const traceparent = rowFromContext();
  if (traceparent !== null) record.traceparent = traceparent;
}

/** After the batch's messages went out: its writes by result and its dead letters. */
function countSent(deps: WriterDeps, outcomes: Applied[], sent: OutgoingMessage[]): void {
  for (const { outcome } of outcomes)
    deps.metrics?.recordWrite(outcome.kind === "recorded" ? "written" : "refused");
  for (const message of sent) {
    if (message.topic === deps.topics.deadLetters) deps.metrics?.deadLettered(deps.topics.commands);
  }
}

/**
 * A span for one written command, continuing the trace its message carries: the record writer's
 * step in the transfer's trace, active while its reply event is made. (The store write itself is
 * shared by the whole batch.)
 */
function replyInTrace(parsed: Parsed, reply: () => Promise<void>): Promise<void> {
  const spec = {
    kind: "consumer" as const,
    parent: contextFromKafkaHeaders(parsed.message.headers),
    attributes: {
      transfer_id: parsed.command.snapshot.id,
      "messaging.destination.name": parsed.message.topic,
    },
  };
  return withSpan(`${parsed.message.topic} process`, spec, reply);
}
