/**
 * MongoDB access of the record writer. Only operations whose filter is an equality on `_id`
 * (and `rank`), or on a batch's `disbursement_id`, are used, because FerretDB v1 runs anything
 * else as a scan of the whole collection in its own process: records are inserted when new and
 * upgraded with `{_id, rank: 1}` (PENDING is the only status below a final one), so a record never
 * moves backwards, even with two writers racing during a consumer rebalance.
 *
 * Final records are written together: FerretDB v1 turns every updateOne into a statement and a
 * commit of its own (a bulkWrite of updates too), but deletes many documents in one statement and
 * inserts many in one. A transfer's first record is usually its final one (the saga writes a
 * PENDING record only for a credit that is late), so a pack's finals are first inserted at once,
 * unordered; only those that meet a record already there go on. Of those, the PENDING records of
 * one batch's items give way to their final records in two statements: delete those still PENDING
 * (filtered by the batch, which its GIN index serves, then by id and rank), insert the finals. Between the two a reader finds no record and
 * reads the saga's own row (transaction-service's fallback), never an older status; a crash between
 * them leaves the command unacknowledged, and its redelivery inserts the finals. A final that meets
 * a record already there (a redelivery, or a PENDING record re-inserted by a late PENDING command in
 * between) takes the one-record path below.
 */
import type { Collection, Db } from "mongodb";
import { statusRank, type TransferRecord } from "#packages/contracts/transfer.ts";
import { recordsCollection, type TransferDocument, toDocument } from "#packages/records/index.ts";
import { runConcurrently } from "#packages/runtime/loops.ts";

const DUPLICATE_KEY = 11000;
const FINAL_WRITE_CONCURRENCY = 16;
/** A batch's finals written together from this many on (fewer take the one-record path). */
const BATCH_FINALS_MIN = 2;

function isDuplicateKey(error: unknown): boolean {
  return (error as { code?: number }).code === DUPLICATE_KEY;
}

/** Apply the snapshots; returns the transfer ids whose stored final status conflicts, with why. */
export async function applySnapshots(db: Db, snapshots: TransferRecord[]): Promise<Map<string, string>> {
  const records = recordsCollection(db);
  const conflicts = new Map<string, string>();

  const pending = snapshots.filter((s) => statusRank(s.status) === 1).map(toDocument);
  if (pending.length > 0) await insertAll(records, pending);

  // Most finals meet no record (the saga writes none before them): all go in by one insert, and
  // only those that meet one (a late credit's PENDING record, a redelivery) take the paths below.
  const finals = snapshots.filter((s) => statusRank(s.status) === 2).map(toDocument);
  const met = finals.length === 0 ? [] : await insertAll(records, finals);
  const { batches, lone } = groupFinals(met);
  const left = [...lone];
  for (const [disbursement_id, docs] of batches)
    left.push(...(await replaceBatchFinals(records, disbursement_id, docs)));
  await runConcurrently(left, FINAL_WRITE_CONCURRENCY, async (doc) => {
    const reason = await upgradeOne(records, doc);
    if (reason !== null) conflicts.set(doc._id, reason);
  });
  return conflicts;
}

/** Final documents by batch (those of a batch with at least BATCH_FINALS_MIN), and the rest. */
function groupFinals(docs: TransferDocument[]): {
  batches: Map<string, TransferDocument[]>;
  lone: TransferDocument[];
} {
  const byBatch = new Map<string, TransferDocument[]>();
  const lone: TransferDocument[] = [];
  for (const doc of docs) {
    if (doc.disbursement_id === undefined) lone.push(doc);
    else byBatch.set(doc.disbursement_id, [...(byBatch.get(doc.disbursement_id) ?? []), doc]);
  }
  for (const [id, group] of byBatch) {
    if (group.length < BATCH_FINALS_MIN) {
      lone.push(...group);
      byBatch.delete(id);
    }
  }
  return { batches: byBatch, lone };
}

/**
 * Inserts many (unordered); returns the documents that met a duplicate key (their record is
 * there already). Any other error is thrown: the command is retried.
 */
async function insertAll(
  records: Collection<TransferDocument>,
  docs: TransferDocument[],
): Promise<TransferDocument[]> {
  try {
    await records.insertMany(docs, { ordered: false });
    return [];
  } catch (error) {
    const writeErrors = (error as { writeErrors?: Array<{ code?: number; index?: number }> }).writeErrors;
    if (writeErrors === undefined || writeErrors.length === 0 || !writeErrors.every(isDuplicateKey))
      throw error;
    return writeErrors.map((e) => {
      const doc = e.index === undefined ? undefined : docs[e.index];
      if (doc === undefined) throw error;
      return doc;
    });
  }
}

/** One batch's PENDING records replaced by their finals; returns the finals left to upgradeOne. */
async function replaceBatchFinals(
  records: Collection<TransferDocument>,
  disbursement_id: string,
  docs: TransferDocument[],
): Promise<TransferDocument[]> {
  await records.deleteMany({ disbursement_id, rank: 1, _id: { $in: docs.map((d) => d._id) } });
  return insertAll(records, docs);
}

/** One final record: upgrade its PENDING record, or insert it; null, or why it conflicts. */
async function upgradeOne(
  records: Collection<TransferDocument>,
  doc: TransferDocument,
): Promise<string | null> {
  const { _id, ...fields } = doc;
  const upgraded = await records.updateOne({ _id, rank: 1 }, { $set: fields });
  if (upgraded.matchedCount === 1) return null;
  try {
    await records.insertOne(doc);
    return null;
  } catch (error) {
    if (!isDuplicateKey(error)) throw error;
    const stored = await records.findOne({ _id }, { projection: { status: 1 } });
    if (stored === null) throw new Error(`record ${_id} neither upgraded, inserted nor found; retrying`);
    if (stored.status === "PENDING") throw new Error(`record ${_id} raced back to PENDING; retrying`);
    return stored.status === doc.status
      ? null
      : `record ${_id} is ${stored.status}; refusing to make it ${doc.status}`;
  }
}
