/**
 * MongoDB writes of disbursement records. Like the transfer records, only filters that are an
 * equality on `_id` (and `version`) are used, since FerretDB v1 scans the collection for
 * anything else: a record is inserted when new, else read and replaced by a compare-and-set on
 * the version it had. A snapshot at or below the stored version changes nothing, so a
 * redelivery or a late older snapshot can never put a batch back.
 */
import type { Db } from "mongodb";
import type { DisbursementSnapshot } from "#packages/contracts/disbursement.ts";
import { disbursementsCollection, toDisbursementDocument } from "#packages/records/disbursements.ts";

const DUPLICATE_KEY = 11000;
/** Compare-and-set rounds lost to another writer before the batch is retried as a whole. */
const RACES_MAX = 5;

/** Keep the newest snapshot per disbursement: one write each. */
export function newestPerDisbursement(snapshots: DisbursementSnapshot[]): DisbursementSnapshot[] {
  const newest = new Map<string, DisbursementSnapshot>();
  for (const snapshot of snapshots) {
    const current = newest.get(snapshot.id);
    if (current === undefined || snapshot.version > current.version) newest.set(snapshot.id, snapshot);
  }
  return [...newest.values()];
}

export async function applyDisbursementSnapshots(db: Db, snapshots: DisbursementSnapshot[]): Promise<void> {
  for (const snapshot of newestPerDisbursement(snapshots)) await applyOne(db, snapshot);
}

async function applyOne(db: Db, snapshot: DisbursementSnapshot): Promise<void> {
  const records = disbursementsCollection(db);
  const { _id, ...fields } = toDisbursementDocument(snapshot);
  for (let race = 0; race < RACES_MAX; race++) {
    const stored = await records.findOne({ _id }, { projection: { version: 1 } });
    if (stored === null) {
      try {
        await records.insertOne({ _id, ...fields });
        return;
      } catch (error) {
        if ((error as { code?: number }).code !== DUPLICATE_KEY) throw error;
        continue;
      }
    }
    if (stored.version >= snapshot.version) return;
    const replaced = await records.updateOne({ _id, version: stored.version }, { $set: fields });
    if (replaced.matchedCount === 1) return;
  }
  throw new Error(`disbursement record ${_id} kept changing under the writer; retrying`);
}
