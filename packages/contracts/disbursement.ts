/**
 * A batch disbursement as the outside world sees it, and as transaction-command-service stores
 * it in MongoDB. One schema, used by the saga (whose database builds the snapshots), the command
 * service (which writes them), the query service (which reads them) and the public API.
 */
import { z } from "zod";
import { transferIdSchema, userIdSchema } from "./ids.ts";
import { AMOUNT_MAX_MINOR } from "./money.ts";
import { listQuerySchema, paginationSchema } from "./pagination.ts";
import { transferSnapshotSchema, transferStatusSchema } from "./transfer.ts";

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

/**
 * `GET /disbursements/:id/items`, the same at transaction-service (the public route) and at
 * transaction-query-service (the records): an optional status, the page size, and the cursor,
 * which is the `item_index` of the last item served (digits, at most four: ITEM_INDEX_MAX).
 */
export const itemsQuerySchema = z.strictObject({
  status: transferStatusSchema.optional(),
  limit: listQuerySchema.shape.limit,
  cursor: z
    .string()
    .regex(/^[0-9]{1,4}$/, { error: "is not a cursor this API returned" })
    .optional(),
});
export type ItemsQuery = z.infer<typeof itemsQuerySchema>;

/** An item: an ordinary transfer, with its batch and the reference the payer gave it. */
export const disbursementItemSchema = transferSnapshotSchema.extend({
  reference: z.string(),
  disbursement_id: transferIdSchema,
});
export type DisbursementItem = z.infer<typeof disbursementItemSchema>;

/** A page of items, in batch order. */
export const itemsPageSchema = z.object({
  items: z.array(disbursementItemSchema),
  pagination: paginationSchema,
});
export type ItemsPage = z.infer<typeof itemsPageSchema>;
