/**
 * A batch disbursement as the outside world sees it, and as transaction-command-service stores
 * it in MongoDB. One schema, used by the saga (whose database builds the snapshots), the command
 * service (which writes them), the query service (which reads them) and the public API.
 */
import { z } from "zod";
import { transferIdSchema, userIdSchema } from "./ids.ts";
import { AMOUNT_MAX_MINOR } from "./money.ts";

export const disbursementStatuses = ["PENDING", "COMPLETED", "PARTIALLY_COMPLETED", "FAILED"] as const;
export const disbursementStatusSchema = z.enum(disbursementStatuses);
export type DisbursementStatus = z.infer<typeof disbursementStatusSchema>;

const count = z.number().int().nonnegative();
const amount = z.number().int().nonnegative().max(AMOUNT_MAX_MINOR);

/** What the API answers for a disbursement. */
export const disbursementSchema = z.object({
  id: transferIdSchema,
  status: disbursementStatusSchema,
  reference: z.string().nullable(),
  source_user_id: userIdSchema,
  item_count: count,
  total_amount: amount,
  counts: z.object({ pending: count, completed: count, failed: count }),
  amount_completed: amount,
  amount_refunded: amount,
  failure_reason: z.string().nullable(),
  created_at: z.iso.datetime({ offset: true }),
  updated_at: z.iso.datetime({ offset: true }),
});
export type DisbursementView = z.infer<typeof disbursementSchema>;

/**
 * The record: the API's shape plus `version`, which the saga's database raises by one with every
 * visible change of the batch. Counts are not monotonic (a late credit can turn a FAILED item
 * COMPLETED), so records are ordered by version, never by status.
 */
export const disbursementSnapshotSchema = disbursementSchema.extend({
  version: z.number().int().positive().max(Number.MAX_SAFE_INTEGER),
});
export type DisbursementSnapshot = z.infer<typeof disbursementSnapshotSchema>;

/** The API's view of a snapshot (the version is the records' business). */
export function disbursementView(snapshot: DisbursementSnapshot): DisbursementView {
  const { version: _version, ...view } = snapshot;
  return view;
}
