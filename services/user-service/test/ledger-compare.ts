/**
 * What the differential ledger tests share: a schema migrated only up to an earlier migration (the
 * ledger as it was), and everything the ledger keeps, read back without timestamps, so that the
 * same calls on both schemas can be compared row by row.
 */
import { randomUUID } from "node:crypto";
import { copyFile, mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Pool } from "#packages/pg/index.ts";
import { openTestSchema, type TestSchema } from "#packages/pg/test-schema.ts";
import { assertSystemAccounts } from "../src/ledger/accounts.ts";
import type { LedgerOperationResult } from "../src/ledger/steps.ts";

export const MIGRATIONS = join(import.meta.dirname, "..", "migrations");

/** A schema with the migrations numbered up to `last` only; drop() also removes their copies. */
export async function openSchemaUpTo(
  base_url: string,
  schema: string,
  last: number,
  options: { application_name: string; pool_max: number },
): Promise<TestSchema> {
  const dir = await mkdtemp(join(tmpdir(), "user-service-migrations-"));
  const files = (await readdir(MIGRATIONS)).filter(
    (f) => /^\d{3}_.+\.sql$/.test(f) && Number(f.slice(0, 3)) <= last,
  );
  await Promise.all(files.map((f) => copyFile(join(MIGRATIONS, f), join(dir, f))));
  const opened = await openTestSchema(base_url, schema, { ...options, migrations: dir });
  return {
    ...opened,
    drop: async () => {
      await opened.drop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * The two schemas a differential test compares, each with its system accounts: `current`, with
 * every migration, and `baseline`, with the migrations up to `last` only.
 */
export async function openComparison(
  base_url: string,
  name: string,
  last: number,
  application_name: string,
): Promise<{ current: TestSchema; baseline: TestSchema }> {
  const options = { application_name, pool_max: 4 };
  const current = await openTestSchema(base_url, `${name}_test`, { ...options, migrations: MIGRATIONS });
  const baseline = await openSchemaUpTo(base_url, `${name}_base`, last, options);
  await assertSystemAccounts(current.pool);
  await assertSystemAccounts(baseline.pool);
  return { current, baseline };
}

/** Transfer ids fixed once, so that both schemas see the same ones. */
export function idsOf(n: number): string[] {
  return Array.from({ length: n }, () => randomUUID());
}

/** An answer without its timestamps (two schemas cannot share those). */
export function answerOf(r: LedgerOperationResult): unknown {
  if (!r.ok) return { code: r.code, message: r.message };
  const { created_at: _c, updated_at: _u, ...hold } = r.hold;
  return hold;
}

export function codesOf(results: LedgerOperationResult[]): string[] {
  return results.map((r) => (r.ok ? `ok:${r.hold.state}` : r.code));
}

/** Everything the ledger keeps, without timestamps, in id order. */
export async function dump(pool: Pool): Promise<Record<string, unknown[]>> {
  const q = async (sql: string) => (await pool.query(sql)).rows;
  return {
    accounts: await q(
      "SELECT id, kind, user_id, balance_minor, held_out_bound_minor FROM accounts ORDER BY id",
    ),
    holds: await q(
      `SELECT transfer_id, source_user_id, dest_user_id, amount_minor, state, source_balance_before_minor,
              dest_balance_before_minor FROM holds ORDER BY transfer_id`,
    ),
    postings: await q("SELECT id, kind, transfer_id, deposit_id FROM postings ORDER BY id"),
    entries: await q(
      "SELECT id, posting_id, account_id, amount_minor, balance_after_minor FROM entries ORDER BY id",
    ),
    refusals: await q(
      "SELECT transfer_id, source_user_id, dest_user_id, amount_minor, result FROM hold_refusals ORDER BY transfer_id",
    ),
  };
}

/** Wallet entries whose balance after is not the wallet's previous one plus the entry's amount. */
export async function brokenChains(pool: Pool): Promise<unknown[]> {
  const { rows } = await pool.query(
    `SELECT e.id, e.account_id FROM (
       SELECT e.id, e.account_id, e.balance_after_minor,
              sum(e.amount_minor) OVER (PARTITION BY e.account_id ORDER BY e.id) AS running
       FROM entries e JOIN accounts a ON a.id = e.account_id AND a.kind = 'wallet') e
     WHERE e.balance_after_minor <> e.running`,
  );
  return rows;
}
