/**
 * The MongoDB shape of a disbursement record, in one place: transaction-command-service writes
 * it, transaction-query-service reads it, the audit compares it with the saga. `_id` is the
 * disbursement id; `version` orders the snapshots (a record never goes back to a lower one).
 */
import type { Collection, Db } from "mongodb";
import type { DisbursementSnapshot } from "#packages/contracts/disbursement.ts";
import { ensureIndexes } from "./index.ts";

export const DISBURSEMENTS_COLLECTION = "disbursements";

export interface DisbursementDocument {
  _id: string;
  version: number;
  status: DisbursementSnapshot["status"];
  reference: string | null;
  source_user_id: number;
  item_count: number;
  total_amount: number;
  counts: DisbursementSnapshot["counts"];
  amount_completed: number;
  amount_refunded: number;
  failure_reason: string | null;
  created_at: Date;
  updated_at: Date;
}

export function disbursementsCollection(db: Db): Collection<DisbursementDocument> {
  return db.collection<DisbursementDocument>(DISBURSEMENTS_COLLECTION);
}

export async function ensureDisbursementIndexes(db: Db): Promise<void> {
  await ensureIndexes(disbursementsCollection(db), [
    { key: { source_user_id: 1, created_at: -1, _id: -1 }, name: "payer_newest_first" },
  ]);
}

export function toDisbursementDocument(snapshot: DisbursementSnapshot): DisbursementDocument {
  return {
    _id: snapshot.id,
    version: snapshot.version,
    status: snapshot.status,
    reference: snapshot.reference,
    source_user_id: snapshot.source_user_id,
    item_count: snapshot.item_count,
    total_amount: snapshot.total_amount,
    counts: { ...snapshot.counts },
    amount_completed: snapshot.amount_completed,
    amount_refunded: snapshot.amount_refunded,
    failure_reason: snapshot.failure_reason,
    created_at: new Date(snapshot.created_at),
    updated_at: new Date(snapshot.updated_at),
  };
}

export function fromDisbursementDocument(doc: DisbursementDocument): DisbursementSnapshot {
  return {
    id: doc._id,
    version: doc.version,
    status: doc.status,
    reference: doc.reference ?? null,
    source_user_id: doc.source_user_id,
    item_count: doc.item_count,
    total_amount: doc.total_amount,
    counts: {
      pending: doc.counts.pending,
      completed: doc.counts.completed,
      failed: doc.counts.failed,
    },
    amount_completed: doc.amount_completed,
    amount_refunded: doc.amount_refunded,
    failure_reason: doc.failure_reason ?? null,
    created_at: doc.created_at.toISOString(),
    updated_at: doc.updated_at.toISOString(),
  };
}
