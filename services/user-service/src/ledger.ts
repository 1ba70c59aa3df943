/**
 * Data access for the ledger. Every function that moves money is one PostgreSQL transaction that
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
import { MAX_MINOR, minorFromPg } from "#packages/contracts/money.ts";
import { type Pool, type PoolClient, withTransaction } from "#packages/pg/index.ts";
// The one assert (packages/runtime), under the name this file's checks read as.
import { assert as invariant } from "#packages/runtime/assert.ts";
import {
  type DepositRow,
  type HoldRow,
  type HoldState,
  type RefusalCode,
  refuse,
  type UserRow,
} from "./domain.ts";

/** Fixed by migrations/001_init.sql and checked at start by assertSystemAccounts. */
export const EXTERNAL_ACCOUNT_ID = "1";
export const CLEARING_ACCOUNT_ID = "2";

const USER_SELECT = `
  SELECT u.id, u.username, a.balance_minor, u.created_at, greatest(u.updated_at, a.updated_at) AS updated_at
  FROM users u JOIN accounts a ON a.user_id = u.id`;

type Queryable = Pool | PoolClient;

function isUniqueViolation(error: unknown, constraint: string): boolean {
  const e = error as { code?: string; constraint?: string };
  return e.code === "23505" && e.constraint === constraint;
}

export async function assertSystemAccounts(pool: Pool): Promise<void> {
  const { rows } = await pool.query<{ id: string; kind: string }>(
    "SELECT id, kind FROM accounts WHERE kind <> 'wallet' ORDER BY id",
  );
  const found = rows.map((r) => `${r.id}:${r.kind}`).join(",");
  invariant(
    found === `${EXTERNAL_ACCOUNT_ID}:external,${CLEARING_ACCOUNT_ID}:clearing`,
    `system accounts are ${found}, expected 1:external,2:clearing`,
  );
}

// ---------------------------------------------------------------------------------------------
// Building blocks (run inside a transaction).

async function liveUser(db: Queryable, user_id: number): Promise<UserRow | null> {
  const { rows } = await db.query<UserRow>(`${USER_SELECT} WHERE u.id = $1 AND u.deleted_at IS NULL`, [
    user_id,
  ]);
  return rows[0] ?? null;
}

async function isLive(client: PoolClient, user_id: number | string): Promise<boolean> {
  const { rowCount } = await client.query("SELECT 1 FROM users WHERE id = $1 AND deleted_at IS NULL", [
    user_id,
  ]);
  return rowCount === 1;
}

interface WalletChange {
  account_id: string;
  balance_after: number;
}

/**
 * Guarded credit: no row when the wallet is missing or has no room. Room counts the money held
 * out of the wallet (holds not yet posted or voided) as if it were back, so that a refund always
 * fits (migrations/003). The wallet's row lock is taken first, in a statement of its own, so the
 * guard's count of held-out money is read after it: a new hold out of this wallet needs the lock.
 */
async function creditWallet(
  client: PoolClient,
  user_id: number | string,
  amount: number,
): Promise<WalletChange | null> {
  await client.query("SELECT 1 FROM accounts WHERE user_id = $1 FOR UPDATE", [user_id]);
  const { rows } = await client.query<{ id: string; balance_minor: string }>(
    `UPDATE accounts SET balance_minor = balance_minor + $2::bigint, updated_at = now()
     WHERE user_id = $1 AND balance_minor::numeric + ledger_held_out($1) + $2::bigint <= $3::bigint
     RETURNING id, balance_minor`,
    [user_id, amount, MAX_MINOR],
  );
  const row = rows[0];
  return row ? { account_id: row.id, balance_after: minorFromPg(row.balance_minor) } : null;
}

interface Leg {
  account_id: string;
  amount: number;
  /** The wallet's balance after this leg; null for the system accounts. */
  balance_after: number | null;
}

/** The saga's steps journal server-side (ledger_journal in 002); only deposits journal from here. */
type PostingRef = { kind: "deposit"; deposit_id: string };

/**
 * Appends one balanced posting. The database checks the balance again at commit (a deferred
 * trigger); checking here first means a bug crashes before anything is sent.
 */
async function journal(client: PoolClient, ref: PostingRef, legs: Leg[]): Promise<void> {
  const total = legs.reduce((sum, leg) => sum + BigInt(leg.amount), 0n);
  invariant(legs.length >= 2, `posting ${JSON.stringify(ref)} has fewer than two legs`);
  invariant(total === 0n, `posting ${JSON.stringify(ref)} does not balance`);
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
  invariant(rowCount === legs.length, `posting ${JSON.stringify(ref)} wrote ${rowCount} entries`);
}

// ---------------------------------------------------------------------------------------------
// Users.

export async function createUser(
  pool: Pool,
  input: { username: string; password_hash: string; opening_balance: number },
): Promise<UserRow> {
  return withTransaction(pool, async (client) => {
    const inserted = await client
      .query<{ id: string }>("INSERT INTO users (username, password_hash) VALUES ($1, $2) RETURNING id", [
        input.username,
        input.password_hash,
      ])
      .catch((error: unknown) => {
        if (isUniqueViolation(error, "users_username_unique")) {
          throw refuse("username_taken", `username ${input.username} is taken`);
        }
        throw error;
      });
    const id = inserted.rows[0]?.id;
    invariant(id !== undefined, "user insert returned no id");
    await client.query("INSERT INTO accounts (kind, user_id, balance_minor) VALUES ('wallet', $1, 0)", [id]);
    // The opening balance is a deposit like any other, journaled in the same transaction.
    if (input.opening_balance > 0) {
      await depositIn(client, { user_id: Number(id), amount: input.opening_balance, idempotency_key: null });
    }
    const user = await liveUser(client, Number(id));
    invariant(user !== null, `user ${id} vanished inside its own transaction`);
    return user;
  });
}

export async function getUser(pool: Pool, user_id: number): Promise<UserRow | null> {
  return liveUser(pool, user_id);
}

/**
 * What a login checks: the id, password hash, token version and lock of the live user with this
 * username (matched case-insensitively, as the unique index is). The hash stays inside
 * user-service: it is read here only, and never mapped into an API shape.
 */
export async function findCredentials(
  pool: Pool,
  username: string,
): Promise<{ id: number; password_hash: string; token_version: number; locked: boolean } | null> {
  const { rows } = await pool.query<{
    id: string;
    password_hash: string;
    token_version: string;
    locked: boolean;
  }>(
    `SELECT id, password_hash, token_version, locked_at IS NOT NULL AS locked
     FROM users WHERE lower(username) = lower($1) AND deleted_at IS NULL`,
    [username],
  );
  const row = rows[0];
  return row === undefined
    ? null
    : {
        id: Number(row.id),
        password_hash: row.password_hash,
        token_version: Number(row.token_version),
        locked: row.locked,
      };
}

/** A user's password hash, for checking `current_password` (null: no such live user). */
export async function passwordHashOf(pool: Pool, user_id: number): Promise<string | null> {
  const { rows } = await pool.query<{ password_hash: string }>(
    "SELECT password_hash FROM users WHERE id = $1 AND deleted_at IS NULL",
    [user_id],
  );
  return rows[0]?.password_hash ?? null;
}

/** The current token version (0 for an unknown id: its tokens fail on the user lookup instead). */
export async function tokenVersionOf(pool: Pool, user_id: number): Promise<number> {
  const { rows } = await pool.query<{ token_version: string }>(
    "SELECT token_version FROM users WHERE id = $1",
    [user_id],
  );
  return Number(rows[0]?.token_version ?? 0);
}

/**
 * Raises a user's token version inside the caller's transaction (the row locked): `publish` gets
 * the version in the database, makes the new one known to the other services and returns it;
 * if it throws, the transaction (and the change it belongs to) is rolled back.
 */
export type PublishVersion = (user_id: number, db_version: number) => Promise<number>;

async function raiseTokenVersion(
  client: PoolClient,
  user_id: number,
  publish: PublishVersion,
): Promise<void> {
  const { rows } = await client.query<{ token_version: string }>(
    "SELECT token_version FROM users WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
    [user_id],
  );
  const row = rows[0];
  if (row === undefined) throw refuse("user_not_found", `user ${user_id} not found`);
  const next = await publish(user_id, Number(row.token_version));
  invariant(next > Number(row.token_version), `token version of user ${user_id} must rise`);
  await client.query("UPDATE users SET token_version = $2 WHERE id = $1", [user_id, next]);
}

/** Locks (or unlocks) an account; a lock revokes every access token of the user at once. */
export async function setLocked(
  pool: Pool,
  user_id: number,
  locked: boolean,
  publish: PublishVersion,
): Promise<UserRow> {
  return withTransaction(pool, async (client) => {
    if (locked) await raiseTokenVersion(client, user_id, publish);
    const { rowCount } = await client.query(
      `UPDATE users SET locked_at = CASE WHEN $2 THEN coalesce(locked_at, now()) END, updated_at = now()
       WHERE id = $1 AND deleted_at IS NULL`,
      [user_id, locked],
    );
    if (rowCount !== 1) throw refuse("user_not_found", `user ${user_id} not found`);
    const user = await liveUser(client, user_id);
    invariant(user !== null, `user ${user_id} vanished inside its own transaction`);
    return user;
  });
}

/**
 * Replaces a hash by a costlier one of the same password (after a login), unless the password
 * changed in between: compare-and-set on the old hash.
 */
export async function upgradePasswordHash(
  pool: Pool,
  user_id: number,
  old_hash: string,
  new_hash: string,
): Promise<boolean> {
  const { rowCount } = await pool.query(
    "UPDATE users SET password_hash = $3 WHERE id = $1 AND password_hash = $2 AND deleted_at IS NULL",
    [user_id, old_hash, new_hash],
  );
  return rowCount === 1;
}

/** Keyset pagination by id: stable under inserts, no OFFSET scans. */
export async function listUsers(
  pool: Pool,
  page: { limit: number; after_id: number },
): Promise<{ rows: UserRow[]; has_more: boolean }> {
  const { rows } = await pool.query<UserRow>(
    `${USER_SELECT} WHERE u.deleted_at IS NULL AND u.id > $1 ORDER BY u.id LIMIT $2`,
    [page.after_id, page.limit + 1],
  );
  return { rows: rows.slice(0, page.limit), has_more: rows.length > page.limit };
}

/** Renames and/or sets a new password; a new password revokes the user's access tokens (`publish`). */
export async function updateUser(
  pool: Pool,
  user_id: number,
  change: { username?: string | undefined; password_hash?: string | undefined },
  publish: PublishVersion,
): Promise<UserRow> {
  return withTransaction(pool, async (client) => {
    if (change.password_hash !== undefined) await raiseTokenVersion(client, user_id, publish);
    try {
      const { rowCount } = await client.query(
        `UPDATE users SET username = coalesce($2, username), password_hash = coalesce($3, password_hash),
                          updated_at = now()
         WHERE id = $1 AND deleted_at IS NULL`,
        [user_id, change.username ?? null, change.password_hash ?? null],
      );
      if (rowCount !== 1) throw refuse("user_not_found", `user ${user_id} not found`);
    } catch (error) {
      if (isUniqueViolation(error, "users_username_unique")) {
        throw refuse("username_taken", `username ${change.username} is taken`);
      }
      throw error;
    }
    const user = await liveUser(client, user_id);
    invariant(user !== null, `user ${user_id} vanished inside its own transaction`);
    return user;
  });
}

/**
 * Closes a user (soft delete). Holding the wallet lock while checking means no deposit, debit
 * or refund can slip in between the checks and the close.
 */
export async function closeUser(pool: Pool, user_id: number): Promise<UserRow & { deleted_at: Date }> {
  return withTransaction(pool, async (client) => {
    const wallet = await client.query<{ balance_minor: string }>(
      "SELECT balance_minor FROM accounts WHERE user_id = $1 FOR UPDATE",
      [user_id],
    );
    const user = await liveUser(client, user_id);
    const balance = wallet.rows[0]?.balance_minor;
    if (user === null || balance === undefined) throw refuse("user_not_found", `user ${user_id} not found`);
    if (minorFromPg(balance) !== 0) {
      throw refuse(
        "balance_not_zero",
        `user ${user_id} still holds ${balance} minor units; withdraw them first`,
      );
    }
    const inFlight = await client.query(
      "SELECT 1 FROM holds WHERE (source_user_id = $1 OR dest_user_id = $1) AND state = 'held' LIMIT 1",
      [user_id],
    );
    if (inFlight.rowCount !== 0) {
      throw refuse("transfers_in_flight", `user ${user_id} has transfers in flight; retry when they finish`);
    }
    const { rows } = await client.query<{ deleted_at: Date; updated_at: Date }>(
      "UPDATE users SET deleted_at = now(), updated_at = now() WHERE id = $1 RETURNING deleted_at, updated_at",
      [user_id],
    );
    const closed = rows[0];
    invariant(closed !== undefined, `user ${user_id} vanished while locked`);
    return { ...user, updated_at: closed.updated_at, deleted_at: closed.deleted_at };
  });
}

// ---------------------------------------------------------------------------------------------
// Deposits: external -> wallet.

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
  invariant(Number.isSafeInteger(first), "first must be an integer");
  invariant(first >= 0, "first must not be negative");
  invariant(Number.isSafeInteger(count), "count must be an integer");
  invariant(count > 0, "count must be positive");
  invariant(count <= 1_000_000, "count must be at most 1000000");
  invariant(Number.isSafeInteger(opening_balance), "opening balance must be an integer");
  invariant(opening_balance > 0, "opening balance must be positive");
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
    invariant(rows.length === count, `opened ${rows.length} wallets, expected ${count}`);
    return rows.map((r) => Number(r.user_id));
  });
}

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

async function depositIn(
  client: PoolClient,
  input: { user_id: number; amount: number; idempotency_key: string | null },
): Promise<DepositResult> {
  const { user_id, amount, idempotency_key } = input;
  if (!(await isLive(client, user_id))) throw refuse("user_not_found", `user ${user_id} not found`);

  // Claim the key first: a concurrent request with the same key waits here for ours to commit,
  // then finds our row (ON CONFLICT DO NOTHING returns nothing) and replays it.
  const inserted = await client.query<{ id: string; created_at: Date }>(
    `INSERT INTO deposits (user_id, amount_minor, idempotency_key) VALUES ($1, $2, $3)
     ON CONFLICT (idempotency_key) DO NOTHING RETURNING id, created_at`,
    [user_id, amount, idempotency_key],
  );
  const claimed = inserted.rows[0];
  if (claimed === undefined) {
    invariant(idempotency_key !== null, "a deposit without a key conflicted");
    const { rows } = await client.query<DepositRow>(
      `SELECT d.id, d.user_id, d.amount_minor, e.balance_after_minor, d.created_at
       FROM deposits d JOIN postings p ON p.deposit_id = d.id
       JOIN entries e ON e.posting_id = p.id AND e.account_id <> $2
       WHERE d.idempotency_key = $1`,
      [idempotency_key, EXTERNAL_ACCOUNT_ID],
    );
    const first = rows[0];
    invariant(first !== undefined, `deposit with key ${idempotency_key} has no wallet entry`);
    invariant(rows.length === 1, `deposit with key ${idempotency_key} has ${rows.length} wallet entries`);
    if (Number(first.user_id) !== user_id || minorFromPg(first.amount_minor) !== amount) {
      throw refuse(
        "idempotency_key_reused",
        "this Idempotency-Key was already used for a different deposit (other user or amount)",
      );
    }
    const user = await liveUser(client, user_id);
    if (user === null) throw refuse("user_not_found", `user ${user_id} not found`);
    return { user, deposit: first, replayed: true };
  }

  const credit = await creditWallet(client, user_id, amount);
  if (credit === null) {
    throw refuse(
      "balance_limit_exceeded",
      `the balance of user ${user_id} would exceed ${MAX_MINOR} minor units`,
    );
  }
  // Asked again now that we hold the wallet lock: a close may have committed while we waited.
  if (!(await isLive(client, user_id))) throw refuse("user_not_found", `user ${user_id} not found`);
  await journal(client, { kind: "deposit", deposit_id: claimed.id }, [
    { account_id: EXTERNAL_ACCOUNT_ID, amount: -amount, balance_after: null },
    { account_id: credit.account_id, amount, balance_after: credit.balance_after },
  ]);
  const user = await liveUser(client, user_id);
  invariant(user !== null, `user ${user_id} vanished while locked`);
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

// ---------------------------------------------------------------------------------------------
// Two-phase transfers: hold (source -> clearing), then post (clearing -> dest) or void
// (clearing -> source). Each is idempotent on the transfer id. The steps run server-side (the
// functions of migrations/002_ledger_batch.sql); this side validates, sends one statement, and
// turns the answers into results and messages.

export interface HoldRequest {
  transfer_id: string;
  source_user_id: number;
  dest_user_id: number;
  amount: number;
}

export type LedgerOperation =
  | ({ op: "hold" } & HoldRequest)
  | { op: "post"; transfer_id: string }
  | { op: "void"; transfer_id: string };

/** The refusals each step can answer with (the saga maps these codes: keep them). */
const STEP_REFUSALS = {
  hold: ["same_wallet", "source_not_found", "dest_not_found", "insufficient_funds", "hold_mismatch"],
  post: ["hold_not_found", "hold_voided", "dest_unavailable"],
  void: ["hold_not_found", "hold_posted"],
} as const satisfies Record<LedgerOperation["op"], readonly RefusalCode[]>;
export type StepRefusalCode = (typeof STEP_REFUSALS)[keyof typeof STEP_REFUSALS][number];

export type LedgerOperationResult =
  | { ok: true; hold: HoldRow }
  | { ok: false; code: StepRefusalCode; message: string };

/**
 * The most operations one batch may carry. A batch is one transaction: it holds one advisory
 * lock per transfer (PostgreSQL's shared lock table) and its wallet locks until it commits, so a
 * large one makes the transfers that queue behind it wait longer. 100 amortises the round trip
 * and the commit almost fully. (The SQL function refuses more than 1000, a backstop.)
 */
export const LEDGER_BATCH_MAX = 100;

/** A row of ledger_apply_batch: the step's input position (from 1), its result, and the hold. */
interface StepRow {
  ordinal: number;
  result: string;
  transfer_id: string | null;
  source_user_id: string | null;
  dest_user_id: string | null;
  amount_minor: string | null;
  state: HoldState | null;
  source_balance_before_minor: string | null;
  dest_balance_before_minor: string | null;
  created_at: Date | null;
  updated_at: Date | null;
}

/**
 * Applies up to LEDGER_BATCH_MAX saga steps in one transaction: one statement, one round trip,
 * one commit. Each step succeeds or is refused on its own (a refusal changes nothing and does not
 * affect the others); an engine failure applies none of them. Results come in input order, but
 * the steps are applied in lock order (by the wallet each locks, then by transfer id), so a step
 * must not count on another of its batch (a refund funding a hold): send such steps in turn.
 * A transfer may appear once per batch (the HTTP layer answers 400 before calling).
 */
export async function applyBatch(
  pool: Pool,
  operations: readonly LedgerOperation[],
): Promise<LedgerOperationResult[]> {
  invariant(operations.length >= 1, "a batch holds at least one operation");
  invariant(
    operations.length <= LEDGER_BATCH_MAX,
    `a batch holds at most ${LEDGER_BATCH_MAX} operations, got ${operations.length}`,
  );
  // UUIDs compare case-insensitively in PostgreSQL: so must the duplicate check.
  const ids = operations.map((o) => o.transfer_id.toLowerCase());
  invariant(new Set(ids).size === ids.length, "a transfer appears more than once in one batch");
  for (const o of operations) {
    if (o.op !== "hold") continue;
    invariant(Number.isSafeInteger(o.amount), `hold ${o.transfer_id}: amount ${o.amount} is not an integer`);
    invariant(o.amount > 0, `hold ${o.transfer_id}: amount ${o.amount} is not positive`);
    invariant(o.amount <= MAX_MINOR, `hold ${o.transfer_id}: amount ${o.amount} is above ${MAX_MINOR}`);
    invariant(Number.isSafeInteger(o.source_user_id), `hold ${o.transfer_id}: source ${o.source_user_id}`);
    invariant(o.source_user_id > 0, `hold ${o.transfer_id}: source ${o.source_user_id} is not positive`);
    invariant(Number.isSafeInteger(o.dest_user_id), `hold ${o.transfer_id}: destination ${o.dest_user_id}`);
    invariant(o.dest_user_id > 0, `hold ${o.transfer_id}: destination ${o.dest_user_id} is not positive`);
  }

  const hold = (o: LedgerOperation) => (o.op === "hold" ? o : null);
  const { rows } = await pool.query<StepRow>(
    "SELECT * FROM ledger_apply_batch($1::text[], $2::uuid[], $3::bigint[], $4::bigint[], $5::bigint[])",
    [
      operations.map((o) => o.op),
      operations.map((o) => o.transfer_id),
      operations.map((o) => hold(o)?.source_user_id ?? null),
      operations.map((o) => hold(o)?.dest_user_id ?? null),
      operations.map((o) => hold(o)?.amount ?? null),
    ],
  );
  invariant(rows.length === operations.length, `${operations.length} steps answered ${rows.length} rows`);

  // Rows come in the order the steps were applied (wallet order); put them back in input order.
  const results: (LedgerOperationResult | undefined)[] = operations.map(() => undefined);
  for (const row of rows) {
    const index = row.ordinal - 1;
    const operation = operations[index];
    invariant(operation !== undefined, `step ordinal ${row.ordinal} is out of range`);
    invariant(results[index] === undefined, `step ordinal ${row.ordinal} is answered twice`);
    results[index] = toResult(operation, row);
  }
  return results.map((result, index) => {
    invariant(result !== undefined, `step ${index + 1} was not answered`);
    return result;
  });
}

function toResult(operation: LedgerOperation, row: StepRow): LedgerOperationResult {
  if (row.result === "ok") {
    const hold = holdOf(row);
    invariant(hold !== null, `step ${operation.op} ${operation.transfer_id} succeeded without a hold`);
    invariant(
      hold.transfer_id === operation.transfer_id.toLowerCase(),
      `step ${operation.op} ${operation.transfer_id} answered with hold ${hold.transfer_id}`,
    );
    return { ok: true, hold };
  }
  const code = (STEP_REFUSALS[operation.op] as readonly string[]).includes(row.result)
    ? (row.result as StepRefusalCode)
    : null;
  invariant(code !== null, `step ${operation.op} ${operation.transfer_id} answered '${row.result}'`);
  return { ok: false, code, message: refusalMessage(operation, code, holdOf(row)) };
}

/** The hold columns of a step row, or null when the step found no hold. */
function holdOf(row: StepRow): HoldRow | null {
  const {
    transfer_id,
    source_user_id,
    dest_user_id,
    amount_minor,
    state,
    source_balance_before_minor,
    created_at,
    updated_at,
  } = row;
  if (transfer_id === null) return null;
  invariant(
    source_user_id !== null &&
      dest_user_id !== null &&
      amount_minor !== null &&
      state !== null &&
      source_balance_before_minor !== null &&
      created_at !== null &&
      updated_at !== null,
    `hold ${transfer_id} came back with missing columns`,
  );
  return {
    transfer_id,
    source_user_id,
    dest_user_id,
    amount_minor,
    state,
    source_balance_before_minor,
    dest_balance_before_minor: row.dest_balance_before_minor,
    created_at,
    updated_at,
  };
}

/** The messages the single-step API has always answered with. */
function refusalMessage(operation: LedgerOperation, code: StepRefusalCode, hold: HoldRow | null): string {
  const { transfer_id } = operation;
  const input = operation.op === "hold" ? operation : null;
  switch (code) {
    case "same_wallet":
      return "source and destination are the same user";
    case "source_not_found":
      return `user ${input?.source_user_id} not found`;
    case "dest_not_found":
      return `user ${input?.dest_user_id} not found`;
    case "insufficient_funds":
      return `user ${input?.source_user_id} has less than ${input?.amount} minor units`;
    case "hold_mismatch":
      return `transfer ${transfer_id} was held with other parties or amount`;
    case "hold_not_found":
      return `no hold for transfer ${transfer_id}`;
    case "hold_voided":
      return `transfer ${transfer_id} was already voided`;
    case "hold_posted":
      return `transfer ${transfer_id} was already posted`;
    case "dest_unavailable":
      return `user ${hold?.dest_user_id} cannot be credited (closed or balance limit)`;
  }
}

/** One step as a batch of one; a refusal is thrown as the ApiError the single-step routes answer. */
async function applyOne(pool: Pool, operation: LedgerOperation): Promise<HoldRow> {
  const [result] = await applyBatch(pool, [operation]);
  invariant(result !== undefined, `step ${operation.op} ${operation.transfer_id} was not answered`);
  if (!result.ok) throw refuse(result.code, result.message);
  return result.hold;
}

export async function getHold(pool: Pool, transfer_id: string): Promise<HoldRow | null> {
  const { rows } = await pool.query<HoldRow>("SELECT * FROM holds WHERE transfer_id = $1", [transfer_id]);
  return rows[0] ?? null;
}

/** Debit: source -> clearing. A retry (also a concurrent one) answers with the first hold. */
export async function holdFunds(pool: Pool, request: HoldRequest): Promise<HoldRow> {
  const { transfer_id, source_user_id, dest_user_id, amount } = request;
  return applyOne(pool, { op: "hold", transfer_id, source_user_id, dest_user_id, amount });
}

/** Credit: clearing -> dest. Refused with dest_unavailable (nothing changes) so the saga voids. */
export async function postHold(pool: Pool, transfer_id: string): Promise<HoldRow> {
  return applyOne(pool, { op: "post", transfer_id });
}

/** Refund: clearing -> source. The source cannot be closed while the hold is held. */
export async function voidHold(pool: Pool, transfer_id: string): Promise<HoldRow> {
  return applyOne(pool, { op: "void", transfer_id });
}

// ---------------------------------------------------------------------------------------------
// Audit: every figure from one repeatable-read snapshot, so they are consistent with each other.

export interface AuditReport {
  accounts: number;
  wallets: number;
  journal_entries: number;
  postings: number;
  total_wallet_balance: string;
  clearing_balance: string;
  external_balance: string;
  total_deposited: string;
  sum_all_entries: string;
  wallets_mismatching_journal: number[];
  negative_wallets: number;
  unbalanced_postings: number;
  entries_without_account: number;
  held_amount: string;
  holds_by_state: { held: number; posted: number; voided: number };
  /** All of: sum_all_entries = 0, no mismatching or negative wallet, every posting balanced and
   * pointing at real accounts, held_amount = clearing_balance, external_balance = -total_deposited. */
  consistent: boolean;
}

export async function audit(pool: Pool): Promise<AuditReport> {
  return withTransaction(pool, async (client) => {
    await client.query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY");
    const { rows } = await client.query<Record<string, string>>(
      `SELECT
         (SELECT count(*) FROM accounts) AS accounts,
         (SELECT count(*) FROM accounts WHERE kind = 'wallet') AS wallets,
         (SELECT count(*) FROM entries) AS journal_entries,
         (SELECT count(*) FROM postings) AS postings,
         (SELECT coalesce(sum(balance_minor), 0) FROM accounts WHERE kind = 'wallet')::text AS total_wallet_balance,
         (SELECT coalesce(sum(amount_minor), 0) FROM entries WHERE account_id = $1)::text AS clearing_balance,
         (SELECT coalesce(sum(amount_minor), 0) FROM entries WHERE account_id = $2)::text AS external_balance,
         (SELECT coalesce(sum(amount_minor), 0) FROM deposits)::text AS total_deposited,
         (SELECT coalesce(sum(amount_minor), 0) FROM entries)::text AS sum_all_entries,
         (SELECT count(*) FROM accounts WHERE kind = 'wallet' AND balance_minor < 0) AS negative_wallets,
         (SELECT count(*) FROM (SELECT 1 FROM entries GROUP BY posting_id HAVING sum(amount_minor) <> 0) u)
           AS unbalanced_postings,
         (SELECT count(*) FROM entries e WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = e.account_id))
           AS entries_without_account,
         (SELECT coalesce(sum(amount_minor), 0) FROM holds WHERE state = 'held')::text AS held_amount,
         (SELECT count(*) FROM holds WHERE state = 'held') AS holds_held,
         (SELECT count(*) FROM holds WHERE state = 'posted') AS holds_posted,
         (SELECT count(*) FROM holds WHERE state = 'voided') AS holds_voided`,
      [CLEARING_ACCOUNT_ID, EXTERNAL_ACCOUNT_ID],
    );
    // The first 20 wallets whose balance is not their journal's sum. Aggregated rather than
    // ORDER BY ... LIMIT: with a LIMIT the planner may pick a nested loop over the per-account
    // sums, quadratic in the wallets (7 minutes at 100k wallets, against 0.2 s this way).
    const mismatching = await client.query<{ user_ids: string[] | null }>(
      `SELECT (array_agg(a.user_id ORDER BY a.user_id))[1:20] AS user_ids FROM accounts a
       LEFT JOIN (SELECT account_id, sum(amount_minor) AS total FROM entries GROUP BY account_id) e
         ON e.account_id = a.id
       WHERE a.kind = 'wallet' AND a.balance_minor <> coalesce(e.total, 0)`,
    );
    const r = rows[0];
    invariant(r !== undefined, "audit query returned no row");
    const count = (key: string) => Number(r[key]);
    const sum = (key: string) => String(r[key]);
    const report = {
      accounts: count("accounts"),
      wallets: count("wallets"),
      journal_entries: count("journal_entries"),
      postings: count("postings"),
      total_wallet_balance: sum("total_wallet_balance"),
      clearing_balance: sum("clearing_balance"),
      external_balance: sum("external_balance"),
      total_deposited: sum("total_deposited"),
      sum_all_entries: sum("sum_all_entries"),
      wallets_mismatching_journal: (mismatching.rows[0]?.user_ids ?? []).map(Number),
      negative_wallets: count("negative_wallets"),
      unbalanced_postings: count("unbalanced_postings"),
      entries_without_account: count("entries_without_account"),
      held_amount: sum("held_amount"),
      holds_by_state: {
        held: count("holds_held"),
        posted: count("holds_posted"),
        voided: count("holds_voided"),
      },
    };
    const consistent =
      BigInt(report.sum_all_entries) === 0n &&
      report.wallets_mismatching_journal.length === 0 &&
      report.negative_wallets === 0 &&
      report.unbalanced_postings === 0 &&
      report.entries_without_account === 0 &&
      BigInt(report.held_amount) === BigInt(report.clearing_balance) &&
      BigInt(report.external_balance) === -BigInt(report.total_deposited);
    return { ...report, consistent };
  });
}
