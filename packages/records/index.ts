/**
 * The MongoDB shape of a transfer record, in one place: transaction-command-service writes it,
 * transaction-query-service reads it. `_id` is the transfer id; `rank` makes "statuses only move
 * forward" a single comparison; `party_user_ids` lets one multikey index serve "all transfers
 * of a user, newest first" whether the user sent or received. A batch's item also holds its
 * place (`disbursement_id`, `item_index`, `reference`): `{disbursement_id, item_index}` serves
 * the batch's items in order.
 */
import type { Collection, Db, Document } from "mongodb";
import { statusRank, type TransferRecord, type TransferSnapshot } from "#packages/contracts/transfer.ts";

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
  /** Set on a batch's items only (absent on lone transfers and on records written before). */
  disbursement_id?: string;
  item_index?: number;
  reference?: string;
}

/**
 * MongoDB did not answer or the client cannot reach it (unreachable, restarting, a pool or client
 * closed): worth retrying later, never the request's or the record's fault. One list, for the
 * HTTP layer's 503 and the record writer's outage handling alike.
 */
export function isMongoUnavailable(error: unknown): boolean {
  const name = (error as { name?: unknown }).name;
  return (
    typeof name === "string" &&
    /^Mongo(ServerSelection|Network|NetworkTimeout|NotConnected|TopologyClosed|PoolCleared|PoolClosed)Error$/.test(
      name,
    )
  );
}

export function recordsCollection(db: Db): Collection<TransferDocument> {
  return db.collection<TransferDocument>(RECORDS_COLLECTION);
}

const RECORD_INDEXES = [
  { key: { party_user_ids: 1, created_at: -1, _id: -1 }, name: "party_newest_first" },
  { key: { status: 1, updated_at: 1 }, name: "status_updated" },
  { key: { disbursement_id: 1, item_index: 1 }, name: "batch_items" },
] as const;

export async function ensureRecordIndexes(db: Db): Promise<void> {
  await ensureIndexes(recordsCollection(db), RECORD_INDEXES);
}

/**
 * Creates the indexes the collection lacks, by name. Only missing ones are asked for: FerretDB
 * v1 takes its metadata's write lock for every createIndexes, even of an existing index, which
 * stalls every other collection operation behind it; a restart after the first must not. One
 * index per call: FerretDB v1 drops the connection when a multi-index createIndexes names
 * indexes that already exist (a real MongoDB accepts either form).
 */
export async function ensureIndexes<T extends Document>(
  collection: Collection<T>,
  indexes: ReadonlyArray<{ key: Readonly<Record<string, 1 | -1>>; name: string }>,
): Promise<void> {
  const existing = await collection
    .listIndexes()
    .toArray()
    .catch((error: { code?: number }) => {
      if (error.code === NAMESPACE_NOT_FOUND) return [];
      throw error;
    });
  const names = new Set(existing.map((index) => String(index.name)));
  for (const index of indexes) {
    if (!names.has(index.name)) await collection.createIndexes([{ key: { ...index.key }, name: index.name }]);
  }
}

/** MongoDB's code for a collection that does not exist (yet). */
const NAMESPACE_NOT_FOUND = 26;

/**
 * The users whose lists show the record. A batch's item whose money never left the payer (its
 * batch refused, or its payee unknown at funding) lists the payer alone: a batch takes payees
 * that do not exist and fails their items, and a transfer must not appear in the list of a user
 * who gets that id later. Every other record lists both parties.
 */
function partiesOf(snapshot: TransferRecord): number[] {
  const neverLeftPayer = snapshot.status === "FAILED" && snapshot.source_init_bal === null;
  return typeof snapshot.disbursement_id === "string" && neverLeftPayer
    ? [snapshot.source_user_id]
    : [snapshot.source_user_id, snapshot.dest_user_id];
}

export function toDocument(snapshot: TransferRecord): TransferDocument {
  const doc: TransferDocument = {
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
    party_user_ids: partiesOf(snapshot),
  };
  // Only an item's fields are written: a lone transfer's document stays as it always was.
  if (typeof snapshot.disbursement_id === "string") {
    doc.disbursement_id = snapshot.disbursement_id;
    if (snapshot.item_index !== undefined) doc.item_index = snapshot.item_index;
    if (snapshot.reference !== undefined) doc.reference = snapshot.reference;
  }
  return doc;
}

/** The record as the public transfer reads serve it: the snapshot alone. */
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

/** The record with its place in its batch (for the items of a batch). */
export function recordFromDocument(doc: TransferDocument): TransferRecord {
  const record: TransferRecord = fromDocument(doc);
  if (doc.disbursement_id !== undefined) record.disbursement_id = doc.disbursement_id;
  if (doc.item_index !== undefined) record.item_index = doc.item_index;
  if (doc.reference !== undefined) record.reference = doc.reference;
  return record;
}
