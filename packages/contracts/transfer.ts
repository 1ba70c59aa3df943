/**
 * The transfer as the outside world sees it, and as transaction-command-service stores it in
 * MongoDB. One schema, used by the saga (which builds snapshots), the command service (which
 * writes them), the query service (which reads them) and the public API (which returns them).
 */
import { z } from "zod";
import { transferIdSchema, userIdSchema } from "./ids.ts";
import { amountMinorSchema, balanceMinorSchema } from "./money.ts";

export const transferStatuses = ["PENDING", "COMPLETED", "FAILED"] as const;
export const transferStatusSchema = z.enum(transferStatuses);
export type TransferStatus = z.infer<typeof transferStatusSchema>;

/** Statuses only move forward: a record at rank r never goes back to a rank below r. */
export function statusRank(status: TransferStatus): number {
  return status === "PENDING" ? 1 : 2;
}

/** Why a transfer failed: machine-readable, stable, documented in the README. */
export const failureReasons = [
  "insufficient_funds",
  "source_not_found",
  "dest_not_found",
  "dest_unavailable",
  "record_rejected",
  "record_timeout",
] as const;
export const failureReasonSchema = z.enum(failureReasons);
export type FailureReason = z.infer<typeof failureReasonSchema>;

const isoDate = z.iso.datetime({ offset: true });

export const transferSnapshotSchema = z.object({
  id: transferIdSchema,
  amount: amountMinorSchema,
  source_user_id: userIdSchema,
  dest_user_id: userIdSchema,
  /** Source balance just before the debit; null when the debit never happened. */
  source_init_bal: balanceMinorSchema.nullable(),
  /** Destination balance just before the credit; null until the credit happens. */
  dest_init_bal: balanceMinorSchema.nullable(),
  status: transferStatusSchema,
  failure_reason: failureReasonSchema.nullable(),
  created_at: isoDate,
  updated_at: isoDate,
});
export type TransferSnapshot = z.infer<typeof transferSnapshotSchema>;

/** The most positions a batch's items take: the public items cursor is at most four digits. */
export const ITEM_INDEX_MAX = 9_999;

/**
 * A batch item's place in its batch, which its records carry so that the records alone serve
 * `GET /disbursements/:id/items`. Optional: a lone transfer has none, and a command written
 * before the fields existed (redelivered across a deploy) still parses.
 */
export const batchPlaceSchema = z.object({
  disbursement_id: transferIdSchema.nullable().optional(),
  /** 0-based position in the batch, in the order the payer gave the items. */
  item_index: z.number().int().min(0).max(ITEM_INDEX_MAX).optional(),
  reference: z.string().max(255).optional(),
});

/** What a record command carries and a record holds: the snapshot and, for an item, its place. */
export const transferRecordSchema = transferSnapshotSchema.extend(batchPlaceSchema.shape);
export type TransferRecord = z.infer<typeof transferRecordSchema>;

/** Who reads: the operator, a user, or a service credential (which sees no balance of either party). */
export type TransferViewer =
  | { kind: "admin" }
  | { kind: "user"; user_id: number }
  | { kind: "ledger" | "query" };

/**
 * The transfer as `viewer` may see it. A party's balance before the transfer is that party's
 * business alone: `source_init_bal` is shown only to the payer, `dest_init_bal` only to the
 * payee, both to the operator. Applied to every transfer that leaves transaction-service toward
 * a client; stores and caches keep the whole snapshot.
 */
export function redactFor(viewer: TransferViewer, transfer: TransferSnapshot): TransferSnapshot {
  if (viewer.kind === "admin") return transfer;
  const user_id = viewer.kind === "user" ? viewer.user_id : null;
  return {
    ...transfer,
    source_init_bal: user_id === transfer.source_user_id ? transfer.source_init_bal : null,
    dest_init_bal: user_id === transfer.dest_user_id ? transfer.dest_init_bal : null,
  };
}
