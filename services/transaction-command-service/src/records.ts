/** MongoDB access of the record writer: read current ranks, apply a plan with guarded writes. */
import type { AnyBulkWriteOperation, Db } from "mongodb";
import { recordsCollection, type TransferDocument, toDocument } from "#packages/records/index.ts";
import type { StoredRecord, WritePlan } from "./plan.ts";

export async function readStored(db: Db, ids: string[]): Promise<Map<string, StoredRecord>> {
  const found = await recordsCollection(db)
    .find({ _id: { $in: ids } }, { projection: { rank: 1, status: 1 } })
    .toArray();
  return new Map(found.map((doc) => [doc._id, { rank: doc.rank, status: doc.status }]));
}

/**
 * Inserts for new records, updates guarded by `rank < new rank` for existing ones, so a
 * concurrent writer (another instance during a rebalance) can never move a record backwards.
 * Any write error makes the caller re-read and re-plan: the retry is idempotent.
 */
export async function applyPlan(db: Db, plan: WritePlan): Promise<void> {
  if (plan.writes.length === 0) return;
  const operations: AnyBulkWriteOperation<TransferDocument>[] = plan.writes.map(({ mode, snapshot }) => {
    const doc = toDocument(snapshot);
    if (mode === "insert") return { insertOne: { document: doc } };
    const { _id, ...fields } = doc;
    return { updateOne: { filter: { _id, rank: { $lt: doc.rank } }, update: { $set: fields } } };
  });
  await recordsCollection(db).bulkWrite(operations, { ordered: false });
}
