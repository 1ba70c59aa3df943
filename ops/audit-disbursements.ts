/**
 * The audit's check of the disbursement records (part of I5): every record names a batch of the
 * saga and never stands ahead of it (same version, same content); on a quiet system every batch
 * has its record at the saga's version. The records are read before the saga, so a batch that
 * moves in between only makes its record look behind (in flight), never wrong.
 */
import type { Db } from "mongodb";
import { type DisbursementSnapshot, disbursementSnapshotSchema } from "#packages/contracts/disbursement.ts";
import type { Pool } from "#packages/pg/index.ts";
import { disbursementsCollection, fromDisbursementDocument } from "#packages/records/disbursements.ts";

export interface DisbursementAudit {
  problems: string[];
  total: number;
  /** Records at the saga's version. */
  matched: number;
}

/** How long a quiet audit lets the last batch records land before it calls them missing. */
const SETTLE_MS = 15_000;
const PROBLEMS_MAX = 50;

export async function auditDisbursementRecords(
  saga: Pool,
  db: Db,
  quiet: boolean,
): Promise<DisbursementAudit> {
  const deadline = Date.now() + SETTLE_MS;
  for (;;) {
    const result = await auditOnce(saga, db, quiet);
    // A quiet system's last record commands may still be between the outbox and MongoDB.
    if (!quiet || result.problems.length === 0 || Date.now() > deadline) return result;
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

async function auditOnce(saga: Pool, db: Db, quiet: boolean): Promise<DisbursementAudit> {
  const records = new Map<string, DisbursementSnapshot>();
  for await (const doc of disbursementsCollection(db).find({}, { batchSize: 10_000 })) {
    // Through the schema, as the saga's snapshot is: one key order, so the two compare as text.
    records.set(doc._id, disbursementSnapshotSchema.parse(fromDisbursementDocument(doc)));
  }
  const { rows } = await saga.query<{ snapshot: unknown }>(
    "SELECT disbursement_snapshot(d) AS snapshot FROM disbursements d ORDER BY d.id",
  );
  const problems: string[] = [];
  const note = (problem: string) => {
    if (problems.length < PROBLEMS_MAX) problems.push(problem);
  };
  let matched = 0;
  const known = new Set<string>();
  for (const row of rows) {
    const batch = disbursementSnapshotSchema.parse(row.snapshot);
    known.add(batch.id);
    const record = records.get(batch.id);
    if (record === undefined) {
      if (quiet) note(`I5: disbursement ${batch.id} has no record`);
    } else if (record.version > batch.version) {
      note(
        `I5: disbursement ${batch.id} record is at version ${record.version}, the saga at ${batch.version}`,
      );
    } else if (record.version === batch.version) {
      if (JSON.stringify(record) !== JSON.stringify(batch))
        note(
          `I5: disbursement ${batch.id} record ${JSON.stringify(record)} differs from the saga's ${JSON.stringify(batch)}`,
        );
      else matched += 1;
    } else if (quiet) {
      note(
        `I5: disbursement ${batch.id} record is at version ${record.version}, behind the saga's ${batch.version}`,
      );
    }
  }
  for (const id of records.keys())
    if (!known.has(id)) note(`I5: disbursement record ${id} names no batch of the saga`);
  return { problems, total: records.size, matched };
}
