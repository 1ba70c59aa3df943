/**
 * Data access for the ledger: the accounts every concern shares, and the building blocks that
 * change them (run inside a transaction). Every function that moves money is one PostgreSQL transaction that
 * writes a balanced posting for each movement, and is keyed so that a retry finds and returns the
 * first result instead of applying twice.
 *
 * Concurrency notes (READ COMMITTED):
 * - A wallet's row lock is the lock for that user's money. Deposits take it with a guarded
 *   UPDATE; the saga's steps with SELECT ... FOR UPDATE before any check (no negative balance,
 *   no balance above 2^53-1, no lost update).
 * - "Is the user still open?" is asked in a statement after the wallet lock is held: that
 *   statement sees any close that committed while we waited, and a close waits for us.
 * - A hold's row lock (SELECT ... FOR UPDATE) serialises post and void of the same transfer.
 * - The saga's steps (hold, post, void) run server-side, in the functions of
 *   migrations/002_ledger_batch.sql: one step is one round trip, and a batch of them is one
 *   statement and one commit. A batch locks many wallets, so it takes its locks in one global
 *   order (the transfers' advisory locks by key, then the wallets by user id): two batches cannot
 *   deadlock. Deposits and closes lock one wallet only.
 */
import { minorFromPg } from "#packages/contracts/money.ts";
import type { Pool, PoolClient } from "#packages/pg/index.ts";
import { assert } from "#packages/runtime/assert.ts";
import type { UserRow } from "../domain.ts";

/** Fixed by migrations/001_init.sql and checked at start by assertSystemAccounts. */
export const EXTERNAL_ACCOUNT_ID = "1";
export const CLEARING_ACCOUNT_ID = "2";

export const USER_SELECT = `
  SELECT u.id, u.username, a.balance_minor, u.created_at, greatest(u.updated_at, a.updated_at) AS updated_at
  FROM users u JOIN accounts a ON a.user_id = u.id`;

export type Queryable = Pool | PoolClient;

export function isUniqueViolation(error: unknown, constraint: string): boolean {
  const e = error as { code?: string; constraint?: string };
  return e.code === "23505" && e.constraint === constraint;
}

export async function assertSystemAccounts(pool: Pool): Promise<void> {
  const { rows } = await pool.query<{ id: string; kind: string }>(
    "SELECT id, kind FROM accounts WHERE kind <> 'wallet' ORDER BY id",
  );
  const found = rows.map((r) => `${r.id}:${r.kind}`).join(",");
  assert(
    found === `${EXTERNAL_ACCOUNT_ID}:external,${CLEARING_ACCOUNT_ID}:clearing`,
    `system accounts are ${found}, expected 1:external,2:clearing`,
  );
}

export async function liveUser(db: Queryable, user_id: number): Promise<UserRow | null> {
  const { rows } = await db.query<UserRow>(`${USER_SELECT} WHERE u.id = $1 AND u.deleted_at IS NULL`, [
    user_id,
  ]);
  return rows[0] ?? null;
}

export async function isLive(client: PoolClient, user_id: number | string): Promise<boolean> {
  const { rowCount } = await client.query("SELECT 1 FROM users WHERE id = $1 AND deleted_at IS NULL", [
    user_id,
  ]);
  return rowCount === 1;
}

export interface WalletChange {
  account_id: string;
  balance_after: number;
}

/**
 * Guarded credit: no row when the wallet is missing or has no room. Room counts the money held
 * out of the wallet (holds not yet posted or voided) as if it were back, so that a refund always
 * fits (migrations/003); ledger_credit_room (migrations/006) asks the wallet's upper bound of it
 * first and sums the holds only near the ceiling. The wallet's row lock is taken first, in a
 * statement of its own, so the count is read after it: a new hold out of this wallet needs the lock.
 */
export async function creditWallet(
  client: PoolClient,
  user_id: number | string,
  amount: number,
): Promise<WalletChange | null> {
  await client.query("SELECT 1 FROM accounts WHERE user_id = $1 FOR UPDATE", [user_id]);
  const { rows } = await client.query<{ id: string; balance_minor: string }>(
    `WITH room AS (
       SELECT id, ledger_credit_room(user_id, balance_minor, held_out_bound_minor, $2::bigint) AS held_out_minor
       FROM accounts WHERE user_id = $1)
     UPDATE accounts a SET balance_minor = a.balance_minor + $2::bigint,
       held_out_bound_minor = room.held_out_minor, updated_at = now()
     FROM room WHERE a.id = room.id AND room.held_out_minor IS NOT NULL
     RETURNING a.id, a.balance_minor`,
    [user_id, amount],
  );
  const row = rows[0];
  return row ? { account_id: row.id, balance_after: minorFromPg(row.balance_minor) } : null;
}

export interface Leg {
  account_id: string;
  amount: number;
  /** The wallet's balance after this leg; null for the system accounts. */
  balance_after: number | null;
}

/** The saga's steps journal server-side (ledger_journal in 002); only deposits journal from here. */
export type PostingRef = { kind: "deposit"; deposit_id: string };

/**
 * Appends one balanced posting. The database checks the balance again at commit (a deferred
 * trigger); checking here first means a bug crashes before anything is sent.
 */
export async function journal(client: PoolClient, ref: PostingRef, legs: Leg[]): Promise<void> {
  const total = legs.reduce((sum, leg) => sum + BigInt(leg.amount), 0n);
  assert(legs.length >= 2, `posting ${JSON.stringify(ref)} has fewer than two legs`);
  assert(total === 0n, `posting ${JSON.stringify(ref)} does not balance`);
  const { rowCount } = await client.query(
    `WITH p AS (INSERT INTO postings (kind, deposit_id) VALUES ($1, $2) RETURNING id)
     INSERT INTO entries (posting_id, account_id, amount_minor, balance_after_minor)
     SELECT p.id, e.account_id, e.amount, e.balance_after
     FROM p, unnest($3::bigint[], $4::bigint[], $5::bigint[]) AS e(account_id, amount, balance_after)`,
    [
      ref.kind,
      ref.deposit_id,
      legs.map((l) => l.account_id),
      legs.map((l) => l.amount),
      legs.map((l) => l.balance_after),
    ],
  );
  assert(rowCount === legs.length, `posting ${JSON.stringify(ref)} wrote ${rowCount} entries`);
}
