/**
 * Users and their credentials: sign-up (with an optional opening deposit), reads, renames,
 * password changes, locks and closes. A change that must end a user's sessions raises their token
 * version in the same transaction (PublishVersion).
 */
import { minorFromPg } from "#packages/contracts/money.ts";
import { type Pool, type PoolClient, withTransaction } from "#packages/pg/index.ts";
import { assert } from "#packages/runtime/assert.ts";
import type { UserRow } from "../domain.ts";
import { isUniqueViolation, liveUser, USER_SELECT } from "./accounts.ts";
import { depositIn } from "./deposits.ts";
import { Refusal } from "./refusal.ts";

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
          throw new Refusal("username_taken", `username ${input.username} is taken`);
        }
        throw error;
      });
    const id = inserted.rows[0]?.id;
    assert(id !== undefined, "user insert returned no id");
    await client.query("INSERT INTO accounts (kind, user_id, balance_minor) VALUES ('wallet', $1, 0)", [id]);
    // The opening balance is a deposit like any other, journaled in the same transaction.
    if (input.opening_balance > 0) {
      await depositIn(client, { user_id: Number(id), amount: input.opening_balance, idempotency_key: null });
    }
    const user = await liveUser(client, Number(id));
    assert(user !== null, `user ${id} vanished inside its own transaction`);
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
  if (row === undefined) throw new Refusal("user_not_found", `user ${user_id} not found`);
  const next = await publish(user_id, Number(row.token_version));
  assert(next > Number(row.token_version), `token version of user ${user_id} must rise`);
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
    if (rowCount !== 1) throw new Refusal("user_not_found", `user ${user_id} not found`);
    const user = await liveUser(client, user_id);
    assert(user !== null, `user ${user_id} vanished inside its own transaction`);
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
      if (rowCount !== 1) throw new Refusal("user_not_found", `user ${user_id} not found`);
    } catch (error) {
      if (isUniqueViolation(error, "users_username_unique")) {
        throw new Refusal("username_taken", `username ${change.username} is taken`);
      }
      throw error;
    }
    const user = await liveUser(client, user_id);
    assert(user !== null, `user ${user_id} vanished inside its own transaction`);
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
    if (user === null || balance === undefined)
      throw new Refusal("user_not_found", `user ${user_id} not found`);
    if (minorFromPg(balance) !== 0) {
      throw new Refusal(
        "balance_not_zero",
        `user ${user_id} still holds ${balance} minor units; withdraw them first`,
      );
    }
    const inFlight = await client.query(
      "SELECT 1 FROM holds WHERE (source_user_id = $1 OR dest_user_id = $1) AND state = 'held' LIMIT 1",
      [user_id],
    );
    if (inFlight.rowCount !== 0) {
      throw new Refusal(
        "transfers_in_flight",
        `user ${user_id} has transfers in flight; retry when they finish`,
      );
    }
    const { rows } = await client.query<{ deleted_at: Date; updated_at: Date }>(
      "UPDATE users SET deleted_at = now(), updated_at = now() WHERE id = $1 RETURNING deleted_at, updated_at",
      [user_id],
    );
    const closed = rows[0];
    assert(closed !== undefined, `user ${user_id} vanished while locked`);
    return { ...user, updated_at: closed.updated_at, deleted_at: closed.deleted_at };
  });
}
