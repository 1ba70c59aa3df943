/**
 * MongoDB access of the record writer. Only operations whose filter is an equality on `_id`
 * (and `rank`) are used, because FerretDB v1 runs anything else as a scan of the whole
 * collection in its own process: records are inserted when new and upgraded with
 * `{_id, rank: 1}` (PENDING is the only status below a final one), so a record never moves
 * backwards, even with two writers racing during a consumer rebalance.
 */
import type { Db } from "mongodb";
import { statusRank, type TransferRecord } from "#packages/contracts/transfer.ts";
import { recordsCollection, toDocument } from "#packages/records/index.ts";
import { runConcurrently } from "#packages/runtime/loops.ts";

const DUPLICATE_KEY = 11000;
const FINAL_WRITE_CONCURRENCY = 16;

function isDuplicateKey(error: unknown): boolean {
  return (error as { code?: number }).code === DUPLICATE_KEY;
}

/** Apply the snapshots; returns the transfer ids whose stored final status conflicts, with why. */
export async function applySnapshots(db: Db, snapshots: TransferRecord[]): Promise<Map<string, string>> {
  const records = recordsCollection(db);
  const conflicts = new Map<string, string>();

  const pending = snapshots.filter((s) => statusRank(s.status) === 1).map(toDocument);
  if (pending.length > 0) {
    try {
      await records.insertMany(pending, { ordered: false });
    } catch (error) {
      // A duplicate means the record exists, at PENDING or beyond: that is the goal.
      const writeErrors = (error as { writeErrors?: unknown[] }).writeErrors;
      if (writeErrors === undefined || writeErrors.length === 0 || !writeErrors.every(isDuplicateKey))
        throw error;
    }
  }

  const finals = snapshots.filter((s) => statusRank(s.status) === 2);
  await runConcurrently(finals, FINAL_WRITE_CONCURRENCY, async (snapshot) => {
    const { _id, ...fields } = toDocument(snapshot);
    const upgraded = await records.updateOne({ _id, rank: 1 }, { $set: fields });
    if (upgraded.matchedCount === 1) return;
    try {
      await records.insertOne({ _id, ...fields });
    } catch (error) {
      if (!isDuplicateKey(error)) throw error;
      const stored = await records.findOne({ _id }, { projection: { status: 1 } });
      if (stored === null) throw new Error(`record ${_id} neither upgraded, inserted nor found; retrying`);
      if (stored.status === "PENDING") throw new Error(`record ${_id} raced back to PENDING; retrying`);
      if (stored.status !== snapshot.status) {
        conflicts.set(_id, `record ${_id} is ${stored.status}; refusing to make it ${snapshot.status}`);
      }
    }
  });
  return conflicts;
}
