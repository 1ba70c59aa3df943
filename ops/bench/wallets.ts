/**
 * Bulk onboarding for the benchmark: wallets opened straight in the ledger's database, journaled
 * exactly as user-service's deposits are, so the audit holds over a benchmark's data too.
 */
import { type Pool, withTransaction } from "#packages/pg/index.ts";
import { assert } from "#packages/runtime/assert.ts";
import { EXTERNAL_ACCOUNT_ID } from "../../services/user-service/src/ledger/accounts.ts";

/**
 * Opens `count` wallets named `<prefix><n>` in one statement, each with the same opening deposit
 * journaled exactly as deposit() journals it (external -> wallet, one posting per deposit).
 * For bulk onboarding and the benchmark, where one transaction per user would take minutes.
 * Returns the new user ids in name order.
 */
export async function openWalletsInBulk(
  pool: Pool,
  input: {
    username_prefix: string;
    first: number;
    count: number;
    password_hash: string;
    opening_balance: number;
  },
): Promise<number[]> {
  const { username_prefix, first, count, password_hash, opening_balance } = input;
  assert(Number.isSafeInteger(first), "first must be an integer");
  assert(first >= 0, "first must not be negative");
  assert(Number.isSafeInteger(count), "count must be an integer");
  assert(count > 0, "count must be positive");
  assert(count <= 1_000_000, "count must be at most 1000000");
  assert(Number.isSafeInteger(opening_balance), "opening balance must be an integer");
  assert(opening_balance > 0, "opening balance must be positive");
  return withTransaction(pool, async (client) => {
    const { rows } = await client.query<{ user_id: string }>(
      `WITH u AS (
         INSERT INTO users (username, password_hash)
         SELECT $1 || g, $2 FROM generate_series($3::bigint, $3::bigint + $4::bigint - 1) g
         RETURNING id),
       a AS (
         INSERT INTO accounts (kind, user_id, balance_minor) SELECT 'wallet', id, $5 FROM u
         RETURNING id, user_id),
       d AS (
         INSERT INTO deposits (user_id, amount_minor) SELECT user_id, $5 FROM a
         RETURNING id, user_id),
       p AS (
         INSERT INTO postings (kind, deposit_id) SELECT 'deposit', id FROM d
         RETURNING id, deposit_id),
       e AS (
         INSERT INTO entries (posting_id, account_id, amount_minor, balance_after_minor)
         SELECT p.id, $6::bigint, -$5::bigint, NULL FROM p
         UNION ALL
         SELECT p.id, a.id, $5, $5 FROM p JOIN d ON d.id = p.deposit_id JOIN a ON a.user_id = d.user_id)
       SELECT user_id FROM a ORDER BY user_id`,
      [username_prefix, password_hash, first, count, opening_balance, EXTERNAL_ACCOUNT_ID],
    );
    assert(rows.length === count, `opened ${rows.length} wallets, expected ${count}`);
    return rows.map((r) => Number(r.user_id));
  });
}
