/**
 * The MongoDB shape of a transfer record, in one place: transaction-command-service writes it,
 * transaction-query-service reads it. `_id` is the transfer id; `rank` makes "statuses only move
 * forward" a single comparison; `party_user_ids` lets one multikey index serve "all transfers
 * of a user, newest first" whether the user sent or received.
 */
import type { Collection, Db } from "mongodb";
import { statusRank, type TransferSnapshot } from "#packages/contracts/transfer.ts";

export const RECORDS_COLLECTION = "transfers";

export interface TransferDocument {
  _id: string;
  amount: number;
  source_user_id: number;
  dest_user_id: number;
  source_init_bal: number | null;
  dest_init_bal: number | null;
  status: TransferSnapshot["status"];
  failure_reason: TransferSnapshot["failure_reason"];
  created_at: Date;
  updated_at: Date;
  rank: number;
  party_user_ids: number[];
}

export function recordsCollection(db: Db): Collection<TransferDocument> {
  return db.collection<TransferDocument>(RECORDS_COLLECTION);
}

const RECORD_INDEXES = [
  { key: { party_user_ids: 1, created_at: -1, _id: -1 }, name: "party_newest_first" },
  { key: { status: 1, updated_at: 1 }, name: "status_updated" },
] as const;

export async function ensureRecordIndexes(db: Db): Promise<void> {
  // One index per call: FerretDB v1 drops the connection when a multi-index createIndexes
  // names indexes that already exist (a real MongoDB accepts either form).
  for (const index of RECORD_INDEXES) {
    await recordsCollection(db).createIndexes([{ key: { ...index.key }, name: index.name }]);
  }
}

export function toDocument(snapshot: TransferSnapshot): TransferDocument {
  return {
    _id: snapshot.id,
    amount: snapshot.amount,
    source_user_id: snapshot.source_user_id,
    dest_user_id: snapshot.dest_user_id,
    source_init_bal: snapshot.source_init_bal,
    dest_init_bal: snapshot.dest_init_bal,
    status: snapshot.status,
    failure_reason: snapshot.failure_reason,
    created_at: new Date(snapshot.created_at),
    updated_at: new Date(snapshot.updated_at),
    rank: statusRank(snapshot.status),
    party_user_ids: [snapshot.source_user_id, snapshot.dest_user_id],
  };
}

export function fromDocument(doc: TransferDocument): TransferSnapshot {
  return {
    id: doc._id,
    amount: doc.amount,
    source_user_id: doc.source_user_id,
    dest_user_id: doc.dest_user_id,
    source_init_bal: doc.source_init_bal,
    dest_init_bal: doc.dest_init_bal,
    status: doc.status,
    failure_reason: doc.failure_reason ?? null,
    created_at: doc.created_at.toISOString(),
    updated_at: doc.updated_at.toISOString(),
  };
}
