/**
 * Deposits: external -> wallet, one balanced posting each, idempotent by an optional key (a
 * replay answers the first deposit; the same key for another user or amount is refused).
 */
import { AMOUNT_MAX_MINOR, minorFromPg } from "#packages/contracts/money.ts";
import { type Pool, type PoolClient, withTransaction } from "#packages/pg/index.ts";
import { assert } from "#packages/runtime/assert.ts";
import type { DepositRow, UserRow } from "../domain.ts";
import { creditWallet, EXTERNAL_ACCOUNT_ID, isLive, journal, liveUser } from "./accounts.ts";
import { Refusal } from "./refusal.ts";

export interface DepositResult {
  user: UserRow;
  deposit: DepositRow;
  /** True when an earlier deposit with the same idempotency key was found and returned. */
  replayed: boolean;
}

export async function deposit(
  pool: Pool,
  input: { user_id: number; amount: number; idempotency_key: string | null },
): Promise<DepositResult> {
  return withTransaction(pool, (client) => depositIn(client, input));
}

export async function depositIn(
  client: PoolClient,
  input: { user_id: number; amount: number; idempotency_key: string | null },
): Promise<DepositResult> {
  const { user_id, amount, idempotency_key } = input;
  if (!(await isLive(client, user_id))) throw new Refusal("user_not_found", `user ${user_id} not found`);

  // Claim the key first: a concurrent request with the same key waits here for ours to commit,
  // then finds our row (ON CONFLICT DO NOTHING returns nothing) and replays it.
  const inserted = await client.query<{ id: string; created_at: Date }>(
    `INSERT INTO deposits (user_id, amount_minor, idempotency_key) VALUES ($1, $2, $3)
     ON CONFLICT (idempotency_key) DO NOTHING RETURNING id, created_at`,
    [user_id, amount, idempotency_key],
  );
  const claimed = inserted.rows[0];
  if (claimed === undefined) return replay(client, input);

  const credit = await creditWallet(client, user_id, amount);
  if (credit === null) {
    throw new Refusal(
      "balance_limit_exceeded",
      `the balance of user ${user_id} would exceed ${AMOUNT_MAX_MINOR} minor units`,
    );
  }
  // Asked again now that we hold the wallet lock: a close may have committed while we waited.
  if (!(await isLive(client, user_id))) throw new Refusal("user_not_found", `user ${user_id} not found`);
  await journal(client, { kind: "deposit", deposit_id: claimed.id }, [
    { account_id: EXTERNAL_ACCOUNT_ID, amount: -amount, balance_after: null },
    { account_id: credit.account_id, amount, balance_after: credit.balance_after },
  ]);
  const user = await liveUser(client, user_id);
  assert(user !== null, `user ${user_id} vanished while locked`);
  return {
    user,
    deposit: {
      id: claimed.id,
      user_id: String(user_id),
      amount_minor: String(amount),
      balance_after_minor: String(credit.balance_after),
      created_at: claimed.created_at,
    },
    replayed: false,
  };
}

/** The deposit that first claimed this key, if it was for the same user and amount. */
async function replay(
  client: PoolClient,
  input: { user_id: number; amount: number; idempotency_key: string | null },
): Promise<DepositResult> {
  const { user_id, amount, idempotency_key } = input;
  assert(idempotency_key !== null, "a deposit without a key conflicted");
  const { rows } = await client.query<DepositRow>(
    `SELECT d.id, d.user_id, d.amount_minor, e.balance_after_minor, d.created_at
     FROM deposits d JOIN postings p ON p.deposit_id = d.id
     JOIN entries e ON e.posting_id = p.id AND e.account_id <> $2
     WHERE d.idempotency_key = $1`,
    [idempotency_key, EXTERNAL_ACCOUNT_ID],
  );
  const first = rows[0];
  assert(first !== undefined, `deposit with key ${idempotency_key} has no wallet entry`);
  assert(rows.length === 1, `deposit with key ${idempotency_key} has ${rows.length} wallet entries`);
  if (Number(first.user_id) !== user_id || minorFromPg(first.amount_minor) !== amount) {
    throw new Refusal(
      "idempotency_key_reused",
      "this Idempotency-Key was already used for a different deposit (other user or amount)",
    );
  }
  const user = await liveUser(client, user_id);
  if (user === null) throw new Refusal("user_not_found", `user ${user_id} not found`);
  return { user, deposit: first, replayed: true };
}
