/**
 * Kafka message contracts: one schema per message, shared by producer and consumer.
 *
 * Commands (saga -> transaction-command-service) and events (command service -> saga) travel
 * on separate topics; every message is keyed by transfer id so one transfer's messages stay
 * ordered on one partition. Delivery is at-least-once: every handler is idempotent.
 */
import { z } from "zod";
import { disbursementSnapshotSchema } from "./disbursement.ts";
import { transferIdSchema } from "./ids.ts";
import { transferRecordSchema, transferStatusSchema } from "./transfer.ts";

export function topicNames(prefix: string) {
  return {
    commands: `${prefix}transfer.commands`,
    events: `${prefix}transfer.events`,
    deadLetters: `${prefix}transfer.dead-letters`,
  } as const;
}
export type TopicNames = ReturnType<typeof topicNames>;

/**
 * Write the transfer record so that it is at least at `snapshot.status`. Applying it twice,
 * or applying an older snapshot after a newer one, changes nothing.
 */
export const recordTransferCommandSchema = z.object({
  type: z.literal("RecordTransfer"),
  message_id: z.uuid(),
  snapshot: transferRecordSchema,
});
export type RecordTransferCommand = z.infer<typeof recordTransferCommandSchema>;

/**
 * Most transfer records one message carries. A record is about 350 bytes of JSON, so a full
 * pack stays far below the brokers' 1 MiB message limit.
 */
export const RECORD_PACK_MAX = 250;

/**
 * A W3C trace context as text (version-traceid-spanid-flags), carried inside a message for the
 * parts of a pack that continue another trace than the message's headers.
 */
export const traceparentSchema = z.string().regex(/^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/);

/**
 * Several RecordTransfer commands in one message (the records one relay round sends: a
 * disbursement's items moving in step, or transfers of their own side by side): each snapshot is
 * applied exactly as its own RecordTransfer would be. Keyed by its first transfer id; a transfer's
 * records need no order between them (statuses only move forward). The message's headers carry
 * the first snapshot's trace; when the snapshots come from several traces, `traceparents` gives
 * each one's (null: none), so the writer and the saga continue every transfer's own trace.
 */
export const recordTransfersCommandSchema = z
  .object({
    type: z.literal("RecordTransfers"),
    message_id: z.uuid(),
    snapshots: z.array(transferRecordSchema).min(1).max(RECORD_PACK_MAX),
    traceparents: z.array(traceparentSchema.nullable()).max(RECORD_PACK_MAX).optional(),
  })
  .refine((c) => c.traceparents === undefined || c.traceparents.length === c.snapshots.length, {
    error: "traceparents must give one entry per snapshot",
  });
export type RecordTransfersCommand = z.infer<typeof recordTransfersCommandSchema>;

/**
 * Write the disbursement record so that it is at least at `snapshot.version`. Sent on the
 * commands topic, keyed by the disbursement id; applying it twice, or an older version after a
 * newer one, changes nothing.
 */
export const recordDisbursementCommandSchema = z.object({
  type: z.literal("RecordDisbursement"),
  message_id: z.uuid(),
  snapshot: disbursementSnapshotSchema,
});
export type RecordDisbursementCommand = z.infer<typeof recordDisbursementCommandSchema>;

/** Everything the commands topic carries. */
export const recordCommandSchema = z.discriminatedUnion("type", [
  recordTransferCommandSchema,
  recordTransfersCommandSchema,
  recordDisbursementCommandSchema,
]);
export type RecordCommand = z.infer<typeof recordCommandSchema>;

/** The record now stands at (at least) `status`. */
export const transferRecordedEventSchema = z.object({
  type: z.literal("TransferRecorded"),
  message_id: z.uuid(),
  transfer_id: transferIdSchema,
  status: transferStatusSchema,
});

/** The answer to a RecordTransfers: every record of the pack written, each at (at least) its status. */
export const transfersRecordedEventSchema = z.object({
  type: z.literal("TransfersRecorded"),
  message_id: z.uuid(),
  records: z
    .array(
      z.object({
        transfer_id: transferIdSchema,
        status: transferStatusSchema,
        /** The record's own trace, when the pack's records come from several (else the headers'). */
        traceparent: traceparentSchema.optional(),
      }),
    )
    .min(1)
    .max(RECORD_PACK_MAX),
});
export type TransfersRecordedEvent = z.infer<typeof transfersRecordedEventSchema>;

/** The record could not be written and never will be (the command went to dead letters). */
export const transferRecordRejectedEventSchema = z.object({
  type: z.literal("TransferRecordRejected"),
  message_id: z.uuid(),
  transfer_id: transferIdSchema,
  status: transferStatusSchema,
  reason: z.string().max(1000),
});

export const transferEventSchema = z.discriminatedUnion("type", [
  transferRecordedEventSchema,
  transferRecordRejectedEventSchema,
]);

/** The disbursement record now stands at (at least) `version`: readers' copies may be stale. */
export const disbursementRecordedEventSchema = z.object({
  type: z.literal("DisbursementRecorded"),
  message_id: z.uuid(),
  disbursement_id: transferIdSchema,
  version: disbursementSnapshotSchema.shape.version,
});
export type DisbursementRecordedEvent = z.infer<typeof disbursementRecordedEventSchema>;

/** Everything the events topic carries. */
export const recordEventSchema = z.discriminatedUnion("type", [
  transferRecordedEventSchema,
  transfersRecordedEventSchema,
  transferRecordRejectedEventSchema,
  disbursementRecordedEventSchema,
]);
export type RecordEvent = z.infer<typeof recordEventSchema>;
export type TransferEvent = z.infer<typeof transferEventSchema>;
export type TransferRecordedEvent = z.infer<typeof transferRecordedEventSchema>;
export type TransferRecordRejectedEvent = z.infer<typeof transferRecordRejectedEventSchema>;

/** What lands on the dead-letter topic: the original message untouched, plus why and where from. */
export const deadLetterSchema = z.object({
  type: z.literal("DeadLetter"),
  message_id: z.uuid(),
  failed_at: z.iso.datetime({ offset: true }),
  reason: z.string().max(2000),
  attempts: z.number().int().nonnegative(),
  origin: z.object({
    service: z.string(),
    topic: z.string(),
    partition: z.number().int().nonnegative(),
    offset: z.string(),
    key: z.string().nullable(),
  }),
  /** The original value as it was received (a string, since it may not even be valid JSON). */
  value: z.string(),
});
export type DeadLetter = z.infer<typeof deadLetterSchema>;

/** Written next to a dead letter when an operator sends it back to its origin topic. */
export const deadLetterReplayedSchema = z.object({
  type: z.literal("DeadLetterReplayed"),
  message_id: z.uuid(),
  letter_id: z.uuid(),
  replayed_at: z.iso.datetime({ offset: true }),
});
export type DeadLetterReplayed = z.infer<typeof deadLetterReplayedSchema>;

export const deadLetterTopicEntrySchema = z.discriminatedUnion("type", [
  deadLetterSchema,
  deadLetterReplayedSchema,
]);
