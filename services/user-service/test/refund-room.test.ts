/**
 * The refund-room rule (a credit leaves room for the payee's own holds to come back) with the
 * wallet's upper bound of its held-out money (migrations/006), against a real PostgreSQL
 * (TEST_LEDGER_DATABASE_URL; skipped when unset). The bound only skips the sum of the holds: near
 * 2^53-1 the exact sum decides, as before.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { copyFile, mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { LedgerOperation } from "#packages/contracts/ledger.ts";
import { minorFromPg } from "#packages/contracts/money.ts";
import { createPool, migrate, type Pool } from "#packages/pg/index.ts";
import { openTestSchema, type TestSchema } from "#packages/pg/test-schema.ts";
import { assertSystemAccounts } from "../src/ledger/accounts.ts";
import { audit } from "../src/ledger/audit.ts";
import { deposit } from "../src/ledger/deposits.ts";
import { fundBatch } from "../src/ledger/funding.ts";
import { applyBatch, type LedgerOperationResult } from "../src/ledger/steps.ts";
import { createUser } from "../src/ledger/users.ts";

const BASE_URL = process.env.TEST_LEDGER_DATABASE_URL ?? "";
const SCHEMA = `user_service_room_test_${process.pid}_${Date.now()}`;
const MIGRATIONS = join(import.meta.dirname, "..", "migrations");
const MAX = Number.MAX_SAFE_INTEGER;

let pool: Pool;
let test_schema: TestSchema | undefined;
let admin: Pool;
/** A pool of its own name, so a test can see in pg_stat_activity when its query waits for a lock. */
let racer: Pool;
const RACER_NAME = `room_racer_${process.pid}_${Date.now()}`;
let names = 0;

async function newUser(balance = 0, db: Pool = pool): Promise<number> {
  names += 1;
  const row = await createUser(db, {
    username: `room${names}`,
    password_hash: "scrypt$not-a-real-hash",
    opening_balance: balance,
  });
  return Number(row.id);
}

/** The wallet's balance, its bound of the money held out of it, and that money summed. */
async function walletOf(user_id: number, db: Pool = pool) {
  const { rows } = await db.query<{ balance_minor: string; bound: string; held: string }>(
    `SELECT balance_minor, held_out_bound_minor AS bound, ledger_held_out(user_id) AS held
     FROM accounts WHERE user_id = $1`,
    [user_id],
  );
  const row = rows[0];
  assert.ok(row, `no wallet for user ${user_id}`);
  return {
    balance: minorFromPg(row.balance_minor),
    bound: minorFromPg(row.bound),
    held: minorFromPg(row.held),
  };
}

async function assertConsistent(): Promise<void> {
  const report = await audit(pool);
  assert.equal(report.wallets_understating_held_out, 0);
  assert.equal(report.consistent, true, JSON.stringify(report));
}

const hold = (transfer_id: string, source_user_id: number, dest_user_id: number, amount: number) =>
  ({ op: "hold", transfer_id, source_user_id, dest_user_id, amount }) as const satisfies LedgerOperation;
const post = (transfer_id: string) => ({ op: "post", transfer_id }) as const satisfies LedgerOperation;
const voiding = (transfer_id: string) => ({ op: "void", transfer_id }) as const satisfies LedgerOperation;

function outcomes(results: LedgerOperationResult[]): string[] {
  return results.map((r) => (r.ok ? `ok:${r.hold.state}` : r.code));
}

/** Holds `amount` from source to dest and answers the transfer id. */
async function held(source: number, dest: number, amount: number): Promise<string> {
  const t = randomUUID();
  assert.deepEqual(outcomes(await applyBatch(pool, [hold(t, source, dest, amount)])), ["ok:held"]);
  return t;
}

/** Waits until a query of the racer pool is blocked on a lock (bounded: fails after 10 s). */
async function racerBlocked(): Promise<void> {
  for (let i = 0; i < 1000; i++) {
    const { rowCount } = await admin.query(
      "SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
      [RACER_NAME],
    );
    if (rowCount !== 0) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  assert.fail("the racer never waited for the lock");
}

describe("refund room with a bound of the held-out money, on PostgreSQL", {
  skip: BASE_URL === "" ? "TEST_LEDGER_DATABASE_URL is not set" : false,
}, () => {
  before(async () => {
    test_schema = await openTestSchema(BASE_URL, SCHEMA, {
      application_name: "user-service-room-test",
      pool_max: 5,
      admin_max: 2,
      migrations: MIGRATIONS,
    });
    ({ admin, pool } = test_schema);
    racer = createPool(test_schema.url, { max: 1, application_name: RACER_NAME });
    await assertSystemAccounts(pool);
  });

  after(async () => {
    await racer?.end();
    await test_schema?.drop();
  });

  it("holds raise the payer's bound, posts leave it, voids lower it; an ordinary credit fits by the bound", async () => {
    const payer = await newUser(1_000);
    const payee = await newUser();
    const t1 = await held(payer, payee, 600);
    const t2 = await held(payer, payee, 300);
    assert.deepEqual(await walletOf(payer), { balance: 100, bound: 900, held: 900 });
    assert.deepEqual(outcomes(await applyBatch(pool, [post(t1)])), ["ok:posted"]);
    // The post held the payee's lock, not the payer's: the payer's bound overstates by 600.
    assert.deepEqual(await walletOf(payer), { balance: 100, bound: 900, held: 300 });
    // Credits far from the ceiling fit by the bound and leave it as it is.
    const back = await held(payee, payer, 50);
    assert.deepEqual(outcomes(await applyBatch(pool, [post(back)])), ["ok:posted"]);
    await deposit(pool, { user_id: payer, amount: 25, idempotency_key: null });
    assert.deepEqual(await walletOf(payer), { balance: 175, bound: 900, held: 300 });
    assert.deepEqual(outcomes(await applyBatch(pool, [voiding(t2)])), ["ok:voided"]);
    assert.deepEqual(await walletOf(payer), { balance: 475, bound: 600, held: 0 });
    await assertConsistent();
  });

  it("near 2^53-1 the exact sum decides: a credit that fits lands (and the bound is made exact), one more is refused", async () => {
    const payer = await newUser(1_000);
    const payee = await newUser();
    const giver = await newUser(20);
    const t1 = await held(payer, payee, 600);
    const t2 = await held(payer, payee, 300);
    assert.deepEqual(outcomes(await applyBatch(pool, [post(t1)])), ["ok:posted"]);
    // balance 100, bound 900, held out 300: up to MAX - 1000 fits by the bound alone.
    await deposit(pool, { user_id: payer, amount: MAX - 1_000, idempotency_key: null });
    assert.deepEqual(await walletOf(payer), { balance: MAX - 900, bound: 900, held: 300 });

    // The bound says no room for 10, the 300 really held out says there is (600 left): it lands.
    const in10 = await held(giver, payer, 10);
    assert.deepEqual(outcomes(await applyBatch(pool, [post(in10)])), ["ok:posted"]);
    assert.deepEqual(await walletOf(payer), { balance: MAX - 890, bound: 300, held: 300 });
    // A deposit past the exact room is refused, one that fits lands.
    await assert.rejects(
      deposit(pool, { user_id: payer, amount: 591, idempotency_key: null }),
      (error: unknown) => (error as { code?: string }).code === "balance_limit_exceeded",
    );
    await deposit(pool, { user_id: payer, amount: 590, idempotency_key: null });
    // No room left: a payment to the payer is refused and changes nothing.
    const in1 = await held(giver, payer, 1);
    assert.deepEqual(outcomes(await applyBatch(pool, [post(in1)])), ["dest_unavailable"]);
    assert.deepEqual(await walletOf(payer), { balance: MAX - 300, bound: 300, held: 300 });
    // So the refund lands.
    assert.deepEqual(outcomes(await applyBatch(pool, [voiding(t2), voiding(in1)])), [
      "ok:voided",
      "ok:voided",
    ]);
    assert.deepEqual(await walletOf(payer), { balance: MAX, bound: 0, held: 0 });
    await assertConsistent();
  });

  it("a batch funding raises its payer's bound by its total, once", async () => {
    const payer = await newUser(MAX - 10);
    const payees = [await newUser(), await newUser(), await newUser()];
    const giver = await newUser(20);
    const items = payees.map((dest_user_id) => ({ transfer_id: randomUUID(), dest_user_id, amount: 3 }));
    const funded = await fundBatch(pool, { disbursement_id: randomUUID(), source_user_id: payer, items });
    assert.ok(funded.every((r) => r.result === "ok"));
    assert.deepEqual(await walletOf(payer), { balance: MAX - 19, bound: 9, held: 9 });
    const [first] = items;
    assert.ok(first);
    assert.deepEqual(outcomes(await applyBatch(pool, [post(first.transfer_id)])), ["ok:posted"]);
    // bound 9 (overstating by 3), held out 6: room for 13. 12 fits only by the exact sum, then 2
    // does not: the two unpaid items' money must be able to come back.
    const in12 = await held(giver, payer, 12);
    const in2 = await held(giver, payer, 2);
    assert.deepEqual(outcomes(await applyBatch(pool, [post(in12)])), ["ok:posted"]);
    assert.deepEqual(outcomes(await applyBatch(pool, [post(in2)])), ["dest_unavailable"]);
    assert.deepEqual(await walletOf(payer), { balance: MAX - 7, bound: 6, held: 6 });
    assert.deepEqual(
      outcomes(await applyBatch(pool, [voiding(in2), ...items.slice(1).map((i) => voiding(i.transfer_id))])),
      ["ok:voided", "ok:voided", "ok:voided"],
    );
    assert.deepEqual(await walletOf(payer), { balance: MAX - 1, bound: 0, held: 0 });
    await assertConsistent();
  });

  it("a credit that waited for the wallet counts the hold that took the lock before it", async () => {
    const payer = await newUser(MAX - 10);
    const payee = await newUser();
    const giver = await newUser(20);
    const t1 = await held(payer, payee, 5);
    assert.deepEqual(outcomes(await applyBatch(pool, [post(t1)])), ["ok:posted"]);
    // balance MAX - 15, bound 5, held out 0: room for 15.
    const in16 = await held(giver, payer, 16);
    const late = randomUUID();
    const holder = await pool.connect();
    try {
      await holder.query("BEGIN");
      const { rows } = await holder.query<{ result: string }>("SELECT (ledger_hold($1, $2, $3, 3)).result", [
        late,
        payer,
        payee,
      ]);
      assert.equal(rows[0]?.result, "ok");
      const pending = applyBatch(racer, [post(in16)]);
      await racerBlocked();
      await holder.query("COMMIT");
      // The hold moved 3 from the balance to held out: still room for 15, so 16 is refused.
      assert.deepEqual(outcomes(await pending), ["dest_unavailable"]);
    } finally {
      holder.release();
    }
    assert.deepEqual(await walletOf(payer), { balance: MAX - 18, bound: 8, held: 3 });
    assert.deepEqual(outcomes(await applyBatch(pool, [voiding(in16), voiding(late)])), [
      "ok:voided",
      "ok:voided",
    ]);
    await assertConsistent();
  });

  it("the audit names a wallet whose bound is below the money held out of it, and its refund still lands", async () => {
    const payer = await newUser(100);
    const t = await held(payer, await newUser(), 40);
    await pool.query("UPDATE accounts SET held_out_bound_minor = 39 WHERE user_id = $1", [payer]);
    const report = await audit(pool);
    assert.equal(report.wallets_understating_held_out, 1);
    assert.equal(report.consistent, false);
    assert.deepEqual(outcomes(await applyBatch(pool, [voiding(t)])), ["ok:voided"]);
    assert.deepEqual(await walletOf(payer), { balance: 100, bound: 0, held: 0 });
    await assertConsistent();
  });

  it("the migration starts every wallet's bound at the money then held out of it", async () => {
    const schema = `${SCHEMA}_upgrade`;
    const dir = await mkdtemp(join(tmpdir(), "user-service-migrations-"));
    try {
      await admin.query(`CREATE SCHEMA ${schema}`);
      const url = new URL(BASE_URL);
      url.searchParams.set("options", `-c search_path=${schema}`);
      const db = createPool(url.toString(), { max: 2, application_name: "user-service-room-test" });
      try {
        const files = (await readdir(MIGRATIONS)).filter((f) => /^00[1-5]_.+\.sql$/.test(f));
        await Promise.all(files.map((f) => copyFile(join(MIGRATIONS, f), join(dir, f))));
        await migrate(db, dir);
        const a = await newUser(0, db);
        const b = await newUser(0, db);
        // The schema before 006 has no bound for deposits to keep: the balances are set directly.
        await db.query("UPDATE accounts SET balance_minor = 100 WHERE user_id = ANY($1::bigint[])", [[a, b]]);
        const ids = [randomUUID(), randomUUID(), randomUUID()];
        for (const [id, source, dest, amount] of [
          [ids[0], a, b, 30],
          [ids[1], a, b, 20],
          [ids[2], b, a, 7],
        ] as const) {
          await db.query("SELECT ledger_hold($1, $2, $3, $4)", [id, source, dest, amount]);
        }
        await db.query("SELECT ledger_post($1)", [ids[1]]);
        // 006 is the next to run (later migrations follow it).
        assert.equal((await migrate(db, MIGRATIONS))[0], "006_held_out_bound.sql");
        assert.deepEqual(await walletOf(a, db), { balance: 50, bound: 30, held: 30 });
        assert.deepEqual(await walletOf(b, db), { balance: 113, bound: 7, held: 7 });
      } finally {
        await db.end();
      }
    } finally {
      await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await rm(dir, { recursive: true, force: true });
    }
  });
});
