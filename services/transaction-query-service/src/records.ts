/** Read side of the transfer records. */
import type { Db, Filter } from "mongodb";
import type { Cursor } from "#packages/contracts/pagination.ts";
import type { TransferSnapshot } from "#packages/contracts/transfer.ts";
import { fromDocument, recordsCollection, type TransferDocument } from "#packages/records/index.ts";

export async function findTransfer(db: Db, id: string): Promise<TransferSnapshot | null> {
  // Records are keyed by the lower-case id the saga generated, as transferIdSchema spells it.
  const doc = await recordsCollection(db).findOne({ _id: id });
  return doc === null ? null : fromDocument(doc);
}

/** A user's transfers (sent or received), newest first; fetches one extra to know if there is more. */
export async function listUserTransfers(
  db: Db,
  user_id: number,
  limit: number,
  after: Cursor | null,
): Promise<{ items: TransferSnapshot[]; has_more: boolean }> {
  const filter: Filter<TransferDocument> = { party_user_ids: user_id };
  if (after !== null) {
    const t = new Date(after.t);
    filter.$or = [{ created_at: { $lt: t } }, { created_at: t, _id: { $lt: after.id } }];
  }
  const docs = await recordsCollection(db)
    .find(filter)
    .sort({ created_at: -1, _id: -1 })
    .limit(limit + 1)
    .toArray();
  return { items: docs.slice(0, limit).map(fromDocument), has_more: docs.length > limit };
}
