/**
 * Kafka handler for the record writer's events. Applying an event is a database transition
 * (retried with the batch if PostgreSQL is down); the ledger step it unlocks is attempted
 * right away but never blocks the partition: if it fails, the sweep picks it up.
 *
 * An event names a transfer; what the transfer is comes from the saga's own row, never from
 * the event. An event for a transfer the saga does not know (another environment's, a
 * forgery, or a transfer from before a database reset) is dropped, counted and logged: it can
 * neither be applied nor ever become applicable, and it says nothing a replay could fix. An event
 * whose transition breaks an invariant goes to the dead letters at once (packages/kafka/retry.ts).
 */
import { type RecordEvent, recordEventSchema, type TransferEvent } from "#packages/contracts/messages.ts";
import type { ConsumedMessage } from "#packages/kafka/index.ts";
import type { Logger } from "#packages/log/index.ts";
import { InvariantError } from "#packages/runtime/assert.ts";
import { runConcurrently } from "#packages/runtime/loops.ts";
import {
  contextFromKafkaHeaders,
  contextFromRow,
  injectKafkaHeaders,
  withSpan,
} from "#packages/tracing/index.ts";
import type { SagaRunner } from "./runner.ts";
import type { SagaStore, StoredTransfer } from "./store.ts";

/** What the handler saw since the process started (shown to the operator). */
export interface EventCounters {
  unknown_transfer_events: number;
}

export function createEventHandler(deps: {
  store: SagaStore;
  runner: SagaRunner;
  logger: Logger;
  concurrency: number;
  counters: EventCounters;
  /** Record events of a batch were handled for these transfers (as the saga now holds them): readers' copies may be stale. */
  onRecordEvents: (transfers: StoredTransfer[]) => Promise<void>;
  /** A disbursement's record moved: readers' copies of the batch may be stale. */
  onDisbursementRecorded: (disbursement_id: string) => Promise<void>;
  onUnreadable: (message: ConsumedMessage, reason: string) => Promise<void>;
}) {
  /**
   * Applies one event to `transfer` (as last seen: a stale copy only costs a reload, since every
   * transition is a compare-and-set). Returns the transfer as this handler left it.
   */
  const handleOne = async (
    event: TransferEvent,
    transfer: StoredTransfer | null,
  ): Promise<StoredTransfer | null> => {
    if (transfer === null) {
      deps.counters.unknown_transfer_events += 1;
      deps.logger.warn(
        { transfer_id: event.transfer_id, type: event.type },
        "event for an unknown transfer; dropped",
      );
      return null;
    }
    const input =
      event.type === "TransferRecorded"
        ? ({ kind: "record_written", status: event.status } as const)
        : ({ kind: "record_rejected", status: event.status } as const);
    if (event.type === "TransferRecordRejected") {
      deps.logger.error(
        { transfer_id: event.transfer_id, reason: event.reason, status: event.status },
        "record rejected",
      );
    }
    const after = await deps.runner.apply(transfer, input);
    try {
      return await deps.runner.advance(after);
    } catch (error) {
      // The partition moves on either way: the sweep retries an outage and parks a breach.
      const level = error instanceof InvariantError ? "error" : "warn";
      deps.logger[level](
        { err: error, transfer_id: after.id, state: after.state },
        "saga step failed; the sweep takes it over",
      );
      return after;
    }
  };

  return async function handleBatch(messages: ConsumedMessage[]): Promise<void> {
    const { byTransfer, batches, unreadable } = groupByTransfer(messages);
    for (const { message, reason } of unreadable) await deps.onUnreadable(message, reason);
    const groups = [...byTransfer.entries()];
    // The batch's transfers in one read; the transitions and ledger steps they lead to are
    // batched across transfers by the store and the ledger client.
    const loaded = await deps.store.getMany(groups.map(([id]) => id));
    const handled: StoredTransfer[] = [];
    await runConcurrently(groups, deps.concurrency, async ([id, group]) => {
      let transfer = loaded.get(id) ?? null;
      for (const { event, message } of group) {
        transfer = await inTrace(message, event, () => handleOne(event, transfer));
      }
      if (transfer !== null) handled.push(transfer);
    });
    // Readers' copies, once for the batch: a pack's 250 records are one round trip, not 250.
    if (handled.length > 0) await deps.onRecordEvents(handled);
    await Promise.all([...batches].map((id) => deps.onDisbursementRecorded(id)));
  };
}

type Grouped = {
  /** Each transfer's events in the order they came: one transfer's are applied in order, different transfers side by side. */
  byTransfer: Map<string, Array<{ event: TransferEvent; message: ConsumedMessage }>>;
  /** Batches whose record was written (DisbursementRecorded), each once. */
  batches: Set<string>;
  /** Messages that are no record event, with why, in the order they came. */
  unreadable: Array<{ message: ConsumedMessage; reason: string }>;
};

/** A batch's events by the transfer they name (and the batches whose record was written). */
export function groupByTransfer(messages: readonly ConsumedMessage[]): Grouped {
  const grouped: Grouped = { byTransfer: new Map(), batches: new Set(), unreadable: [] };
  for (const message of messages) {
    let parsed: ReturnType<typeof recordEventSchema.safeParse>;
    try {
      parsed = recordEventSchema.safeParse(JSON.parse(message.value));
    } catch {
      grouped.unreadable.push({ message, reason: "value is not JSON" });
      continue;
    }
    if (!parsed.success) {
      grouped.unreadable.push({ message, reason: `not a valid transfer event: ${parsed.error.message}` });
      continue;
    }
    if (parsed.data.type === "DisbursementRecorded") {
      grouped.batches.add(parsed.data.disbursement_id);
      continue;
    }
    for (const { event, traceparent } of eventsOf(parsed.data)) {
      const list = grouped.byTransfer.get(event.transfer_id) ?? [];
      // A record of a pack of several traces names its own: its handling continues that one.
      const own =
        traceparent === undefined
          ? message
          : { ...message, headers: injectKafkaHeaders({}, contextFromRow(traceparent)) };
      list.push({ event, message: own });
      grouped.byTransfer.set(event.transfer_id, list);
    }
  }
  return grouped;
}

/**
 * A pack's answer (TransfersRecorded) as one TransferRecorded per record, with the record's own
 * trace when it names one; any other event as is.
 */
function eventsOf(
  event: Exclude<RecordEvent, { type: "DisbursementRecorded" }>,
): Array<{ event: TransferEvent; traceparent?: string | undefined }> {
  if (event.type !== "TransfersRecorded") return [{ event }];
  return event.records.map((r) => ({
    event: {
      type: "TransferRecorded",
      message_id: event.message_id,
      transfer_id: r.transfer_id,
      status: r.status,
    },
    traceparent: r.traceparent,
  }));
}

/**
 * One event's handling as a span continuing the trace its message carries (the transfer's, from
 * the record writer): the ledger steps and the outbox row it leads to stay in that trace.
 */
function inTrace<T>(message: ConsumedMessage, event: TransferEvent, handle: () => Promise<T>): Promise<T> {
  const spec = {
    kind: "consumer" as const,
    parent: contextFromKafkaHeaders(message.headers),
    attributes: { transfer_id: event.transfer_id, "messaging.destination.name": message.topic },
  };
  return withSpan(`${message.topic} process`, spec, handle);
}
