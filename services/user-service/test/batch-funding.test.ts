/**
 * Batch funding against a real PostgreSQL (TEST_LEDGER_DATABASE_URL; skipped when unset): one
 * commit holds every item or none, idempotent by the disbursement id, a refusal remembered.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { FundingItem } from "#packages/contracts/ledger.ts";
import { minorFromPg } from "#packages/contracts/money.ts";
import type { Pool } from "#packages/pg/index.ts";
import { openTestSchema, type TestSchema } from "#packages/pg/test-schema.ts";
import { assertSystemAccounts } from "../src/ledger/accounts.ts";
import { audit } from "../src/ledger/audit.ts";
import { deposit } from "../src/ledger/deposits.ts";
import { fundBatch } from "../src/ledger/funding.ts";
import { applyBatch } from "../src/ledger/steps.ts";
import { closeUser, createUser } from "../src/ledger/users.ts";

const BASE_URL = process.env.TEST_LEDGER_DATABASE_URL ?? "";
const SCHEMA = `user_service_funding_test_${process.pid}_${Date.now()}`;

let pool: Pool;
let test_schema: TestSchema | undefined;
let names = 0;

async function newUser(balance = 0): Promise<number> {
  names += 1;
  const row = await createUser(pool, {
    username: `payee${names}`,
    password_hash: "scrypt$not-a-real-hash",
    opening_balance: balance,
  });
  return Number(row.id);
}

async function balanceOf(user_id: number): Promise<number> {
  const { rows } = await pool.query<{ balance_minor: string }>(
    "SELECT balance_minor FROM accounts WHERE user_id = $1",
    [user_id],
  );
  return minorFromPg(rows[0]?.balance_minor ?? "NaN");
}

async function heldOf(transfer_ids: string[]): Promise<number> {
  const { rows } = await pool.query<{ n: string }>(
    "SELECT count(*) AS n FROM holds WHERE transfer_id = ANY($1::uuid[]) AND state = 'held'",
    [transfer_ids],
  );
  return Number(rows[0]?.n);
}

async function assertConsistent(): Promise<void> {
  const report = await audit(pool);
  assert.equal(report.consistent, true, JSON.stringify(report));
}

function items(dests: number[], amount: number): FundingItem[] {
  return dests.map((dest_user_id) => ({ transfer_id: randomUUID(), dest_user_id, amount }));
}

describe("batch funding on PostgreSQL", {
  skip: BASE_URL === "" ? "TEST_LEDGER_DATABASE_URL is not set" : false,
}, () => {
  before(async () => {
    test_schema = await openTestSchema(BASE_URL, SCHEMA, {
      application_name: "user-service-funding-test",
      pool_max: 10,
      migrations: join(import.meta.dirname, "..", "migrations"),
    });
    ({ pool } = test_schema);
    await assertSystemAccounts(pool);
  });

  after(async () => {
    await test_schema?.drop();
  });

  it("holds 1,000 items in one commit, each with its own hold and posting, and a retry changes nothing", async () => {
    const payer = await newUser(10_000);
    const payee = await newUser();
    const batch = items(
      Array.from({ length: 1_000 }, () => payee),
      7,
    );
    const id = randomUUID();
    const first = await fundBatch(pool, { disbursement_id: id, source_user_id: payer, items: batch });
    assert.ok(first.every((r) => r.result === "ok"));
    // Each item's balance before is the payer's balance less the items held before it.
    assert.deepEqual(
      first.slice(0, 3).map((r) => (r.result === "ok" ? r.source_balance_before : -1)),
      [10_000, 9_993, 9_986],
    );
    assert.equal(await balanceOf(payer), 3_000);
    assert.equal(await heldOf(batch.map((i) => i.transfer_id)), 1_000);
    const postings = await pool.query<{ n: string }>(
      "SELECT count(*) AS n FROM postings WHERE kind = 'hold' AND transfer_id = ANY($1::uuid[])",
      [batch.map((i) => i.transfer_id)],
    );
    assert.equal(Number(postings.rows[0]?.n), 1_000);
    const again = await fundBatch(pool, { disbursement_id: id, source_user_id: payer, items: batch });
    assert.deepEqual(again, first);
    assert.equal(await balanceOf(payer), 3_000);
    // Each item then settles through the ordinary steps.
    const settled = await applyBatch(pool, [
      { op: "post", transfer_id: batch[0]?.transfer_id ?? "" },
      { op: "void", transfer_id: batch[1]?.transfer_id ?? "" },
    ]);
    assert.ok(settled.every((r) => r.ok));
    assert.equal(await balanceOf(payee), 7);
    assert.equal(await balanceOf(payer), 3_007);
    await assertConsistent();
  });

  it("refuses the whole batch when the total exceeds the balance, and remembers it after a deposit", async () => {
    const payer = await newUser(100);
    const [a, b] = [await newUser(), await newUser()];
    const batch = items([a, b, a], 40);
    const id = randomUUID();
    const refused = await fundBatch(pool, { disbursement_id: id, source_user_id: payer, items: batch });
    assert.deepEqual(
      refused.map((r) => r.result),
      ["insufficient_funds", "insufficient_funds", "insufficient_funds"],
    );
    assert.equal(await balanceOf(payer), 100);
    assert.equal(await heldOf(batch.map((i) => i.transfer_id)), 0);
    // Money arriving later does not fund a batch already refused.
    await deposit(pool, { user_id: payer, amount: 1_000, idempotency_key: null });
    const replay = await fundBatch(pool, { disbursement_id: id, source_user_id: payer, items: batch });
    assert.deepEqual(replay, refused);
    assert.equal(await balanceOf(payer), 1_100);
    // The same id asked with another total is refused, and changes nothing.
    const other = await fundBatch(pool, {
      disbursement_id: id,
      source_user_id: payer,
      items: batch.slice(0, 2),
    });
    assert.deepEqual(
      other.map((r) => r.result),
      ["funding_mismatch", "funding_mismatch"],
    );
    await assertConsistent();
  });

  it("does not hold an item whose payee is unknown or closed; the rest are funded", async () => {
    const payer = await newUser(1_000);
    const live = await newUser();
    const closed = await newUser();
    await closeUser(pool, closed);
    const batch = items([live, 999_999_999, closed, live], 10);
    const results = await fundBatch(pool, {
      disbursement_id: randomUUID(),
      source_user_id: payer,
      items: batch,
    });
    assert.deepEqual(
      results.map((r) => r.result),
      ["ok", "dest_not_found", "dest_not_found", "ok"],
    );
    assert.equal(await balanceOf(payer), 980);
    // The refused item's id stays refused for a single hold too (the refusal memory).
    const single = await applyBatch(pool, [
      {
        op: "hold",
        transfer_id: batch[1]?.transfer_id ?? "",
        source_user_id: payer,
        dest_user_id: 999_999_999,
        amount: 10,
      },
    ]);
    assert.equal(single[0]?.ok, false);
    await assertConsistent();
  });

  it("concurrent copies of one funding hold once", async () => {
    const payer = await newUser(500);
    const batch = items([await newUser(), await newUser()], 100);
    const id = randomUUID();
    const answers = await Promise.all(
      Array.from({ length: 5 }, () =>
        fundBatch(pool, { disbursement_id: id, source_user_id: payer, items: batch }),
      ),
    );
    for (const answer of answers) assert.deepEqual(answer, answers[0]);
    assert.equal(await balanceOf(payer), 300);
    await assertConsistent();
  });
});
