/**
 * The ledger against a real PostgreSQL (TEST_LEDGER_DATABASE_URL; skipped when unset). Each run
 * migrates into a fresh schema of its own and drops it at the end, so the database is left as
 * it was found and runs do not see each other.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { minorFromPg } from "#packages/contracts/money.ts";
import { createPool, migrate, type Pool } from "#packages/pg/index.ts";
import {
  assertSystemAccounts,
  audit,
  closeUser,
  createUser,
  deposit,
  getHold,
  holdFunds,
  postHold,
  voidHold,
} from "../src/ledger.ts";

const BASE_URL = process.env.TEST_LEDGER_DATABASE_URL ?? "";
const SCHEMA = `user_service_test_${process.pid}_${Date.now()}`;
const FAKE_HASH = "scrypt$not-a-real-hash"; // hashing is unit-tested; here it would only be slow

let pool: Pool;
let admin: Pool;
let nameCounter = 0;

function refusal(code: string) {
  return (error: unknown) => {
    assert.equal((error as { code?: string }).code, code, (error as Error).message);
    return true;
  };
}

async function newUser(balance = 0): Promise<number> {
  nameCounter += 1;
  const row = await createUser(pool, {
    username: `user${nameCounter}`,
    password_hash: FAKE_HASH,
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

async function journalSumOf(user_id: number): Promise<number> {
  const { rows } = await pool.query<{ total: string }>(
    `SELECT coalesce(sum(e.amount_minor), 0) AS total
     FROM entries e JOIN accounts a ON a.id = e.account_id WHERE a.user_id = $1`,
    [user_id],
  );
  return minorFromPg(rows[0]?.total ?? "NaN");
}

async function postingsFor(transfer_id: string): Promise<Record<string, number>> {
  const { rows } = await pool.query<{ kind: string; n: string }>(
    "SELECT kind, count(*) AS n FROM postings WHERE transfer_id = $1 GROUP BY kind",
    [transfer_id],
  );
  return Object.fromEntries(rows.map((r) => [r.kind, Number(r.n)]));
}

async function assertConsistent(): Promise<void> {
  const report = await audit(pool);
  assert.equal(report.sum_all_entries, "0");
  assert.deepEqual(report.wallets_mismatching_journal, []);
  assert.equal(report.negative_wallets, 0);
  assert.equal(report.held_amount, report.clearing_balance);
  assert.equal(report.consistent, true, JSON.stringify(report));
}

describe("ledger on PostgreSQL", {
  skip: BASE_URL === "" ? "TEST_LEDGER_DATABASE_URL is not set" : false,
}, () => {
  before(async () => {
    admin = createPool(BASE_URL, { max: 1, application_name: "user-service-test" });
    await admin.query(`CREATE SCHEMA ${SCHEMA}`);
    const url = new URL(BASE_URL);
    url.searchParams.set("options", `-c search_path=${SCHEMA}`);
    pool = createPool(url.toString(), { max: 30, application_name: "user-service-test" });
    await migrate(pool, join(import.meta.dirname, "..", "migrations"));
    await assertSystemAccounts(pool);
  });

  after(async () => {
    await pool?.end();
    await admin?.query(`DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE`);
    await admin?.end();
  });

  it("journals the opening balance as a deposit from the external account", async () => {
    const alice = await newUser(1000);
    assert.equal(await balanceOf(alice), 1000);
    assert.equal(await journalSumOf(alice), 1000);
    await assertConsistent();
  });

  it("hold, post and void apply exactly once under retries", async () => {
    const a = await newUser(1000);
    const b = await newUser(0);
    const t1 = randomUUID();
    const request = { transfer_id: t1, source_user_id: a, dest_user_id: b, amount: 300 };

    // Ten copies of the same hold at once (a saga retrying after timeouts): one debit.
    const holds = await Promise.all(Array.from({ length: 10 }, () => holdFunds(pool, request)));
    for (const hold of holds) assert.deepEqual(hold, holds[0]);
    assert.equal(holds[0]?.state, "held");
    assert.equal(holds[0]?.source_balance_before_minor, "1000");
    assert.equal(await balanceOf(a), 700);
    await assert.rejects(holdFunds(pool, { ...request, amount: 301 }), refusal("hold_mismatch"));
    await assert.rejects(holdFunds(pool, { ...request, dest_user_id: a }), refusal("same_wallet"));

    const posts = await Promise.all(Array.from({ length: 10 }, () => postHold(pool, t1)));
    for (const post of posts) assert.deepEqual(post, posts[0]);
    assert.equal(posts[0]?.state, "posted");
    assert.equal(posts[0]?.dest_balance_before_minor, "0");
    assert.equal(await balanceOf(b), 300);
    // A hold retried after its post answers with the hold as it now stands, and moves nothing.
    assert.equal((await holdFunds(pool, request)).state, "posted");
    await assert.rejects(voidHold(pool, t1), refusal("hold_posted"));
    assert.deepEqual(await postingsFor(t1), { hold: 1, post: 1 });

    const t2 = randomUUID();
    await holdFunds(pool, { transfer_id: t2, source_user_id: a, dest_user_id: b, amount: 200 });
    assert.equal(await balanceOf(a), 500);
    const voids = await Promise.all(Array.from({ length: 10 }, () => voidHold(pool, t2)));
    for (const v of voids) assert.deepEqual(v, voids[0]);
    assert.equal(voids[0]?.state, "voided");
    assert.equal(await balanceOf(a), 700);
    await assert.rejects(postHold(pool, t2), refusal("hold_voided"));
    assert.deepEqual(await postingsFor(t2), { hold: 1, void: 1 });

    await assert.rejects(postHold(pool, randomUUID()), refusal("hold_not_found"));
    await assert.rejects(voidHold(pool, randomUUID()), refusal("hold_not_found"));
    assert.equal(await getHold(pool, randomUUID()), null);
    assert.equal(await journalSumOf(a), 700);
    assert.equal(await journalSumOf(b), 300);
    await assertConsistent();
  });

  it("copies of one hold racing for the last funds all get the hold, never insufficient_funds", async () => {
    for (let round = 0; round < 10; round++) {
      const a = await newUser(300);
      const b = await newUser(0);
      const request = { transfer_id: randomUUID(), source_user_id: a, dest_user_id: b, amount: 300 };
      const holds = await Promise.all(Array.from({ length: 8 }, () => holdFunds(pool, request)));
      for (const hold of holds) assert.deepEqual(hold, holds[0]);
      assert.equal(await balanceOf(a), 0);
    }
    await assertConsistent();
  });

  it("a post racing a void: exactly one of them wins", async () => {
    const a = await newUser(100);
    const b = await newUser(0);
    for (let round = 0; round < 20; round++) {
      const t = randomUUID();
      await holdFunds(pool, { transfer_id: t, source_user_id: a, dest_user_id: b, amount: 1 });
      const [post, voided] = await Promise.allSettled([postHold(pool, t), voidHold(pool, t)]);
      const losers = [post, voided].filter((r) => r.status === "rejected");
      assert.equal(losers.length, 1, `round ${round}: ${post.status} / ${voided.status}`);
      assert.match(
        String((losers[0]?.reason as { code?: string } | undefined)?.code),
        /^hold_(posted|voided)$/,
      );
    }
    assert.equal((await balanceOf(a)) + (await balanceOf(b)), 100);
    await assertConsistent();
  });

  it("50 concurrent holds on one wallet never overdraw it", async () => {
    const a = await newUser(1000);
    const b = await newUser(0);
    const results = await Promise.allSettled(
      Array.from({ length: 50 }, () =>
        holdFunds(pool, { transfer_id: randomUUID(), source_user_id: a, dest_user_id: b, amount: 30 }),
      ),
    );
    const held = results.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
    const refused = results.flatMap((r) => (r.status === "rejected" ? [r.reason] : []));
    for (const reason of refused) refusal("insufficient_funds")(reason);
    assert.equal(held.length, 33); // floor(1000 / 30)
    assert.equal(await balanceOf(a), 1000 - 33 * 30);
    assert.equal(await journalSumOf(a), 1000 - 33 * 30);
    // Each successful hold saw a distinct balance before it: no two debits read the same row version.
    const befores = held.map((hold) => hold.source_balance_before_minor);
    assert.equal(new Set(befores).size, 33);
    await assertConsistent();
  });

  it("deposits are idempotent on their key, also when the retries race", async () => {
    const a = await newUser(0);
    const key = `key-${randomUUID()}`;
    const results = await Promise.all(
      Array.from({ length: 10 }, () => deposit(pool, { user_id: a, amount: 250, idempotency_key: key })),
    );
    assert.equal(new Set(results.map((r) => r.deposit.id)).size, 1);
    assert.equal(results.filter((r) => !r.replayed).length, 1);
    for (const r of results) assert.equal(r.deposit.balance_after_minor, "250");
    assert.equal(await balanceOf(a), 250);
    await assert.rejects(
      deposit(pool, { user_id: a, amount: 251, idempotency_key: key }),
      refusal("idempotency_key_reused"),
    );
    const b = await newUser(0);
    await assert.rejects(
      deposit(pool, { user_id: b, amount: 250, idempotency_key: key }),
      refusal("idempotency_key_reused"),
    );
    await assert.rejects(
      deposit(pool, { user_id: 987654321, amount: 1, idempotency_key: null }),
      refusal("user_not_found"),
    );
    await assert.rejects(
      deposit(pool, { user_id: a, amount: Number.MAX_SAFE_INTEGER, idempotency_key: null }),
      refusal("balance_limit_exceeded"),
    );
    await assertConsistent();
  });

  it("closing a user: refused with money or holds in flight; a closed dest is unavailable", async () => {
    const a = await newUser(100);
    const b = await newUser(0);
    await assert.rejects(closeUser(pool, a), refusal("balance_not_zero"));
    const t = randomUUID();
    await holdFunds(pool, { transfer_id: t, source_user_id: a, dest_user_id: b, amount: 40 });
    await assert.rejects(closeUser(pool, b), refusal("transfers_in_flight"));
    // The close race the saga must survive: dest closed after the hold. Simulated directly.
    await pool.query("UPDATE users SET deleted_at = now() WHERE id = $1", [b]);
    await assert.rejects(postHold(pool, t), refusal("dest_unavailable"));
    assert.equal((await getHold(pool, t))?.state, "held");
    assert.equal((await voidHold(pool, t)).state, "voided");
    assert.equal(await balanceOf(a), 100);

    const c = await newUser(0);
    const closed = await closeUser(pool, c);
    assert.ok(closed.deleted_at instanceof Date);
    await assert.rejects(closeUser(pool, c), refusal("user_not_found"));
    await assert.rejects(
      deposit(pool, { user_id: c, amount: 1, idempotency_key: null }),
      refusal("user_not_found"),
    );
    const hold = { transfer_id: randomUUID(), amount: 1 };
    await assert.rejects(
      holdFunds(pool, { ...hold, source_user_id: a, dest_user_id: c }),
      refusal("dest_not_found"),
    );
    await assert.rejects(
      holdFunds(pool, { ...hold, source_user_id: c, dest_user_id: a }),
      refusal("source_not_found"),
    );
    await assertConsistent();
  });

  it("the journal is append-only and postings must balance", async () => {
    const a = await newUser(10);
    const b = await newUser(0);
    const t = randomUUID();
    await holdFunds(pool, { transfer_id: t, source_user_id: a, dest_user_id: b, amount: 5 });
    await postHold(pool, t);
    await assert.rejects(pool.query("UPDATE entries SET amount_minor = amount_minor + 1"), /append-only/);
    await assert.rejects(pool.query("DELETE FROM postings"), /append-only/);
    await assert.rejects(pool.query("TRUNCATE entries CASCADE"), /append-only/);
    await assert.rejects(
      pool.query(
        `WITH p AS (INSERT INTO postings (kind, transfer_id) VALUES ('hold', gen_random_uuid()) RETURNING id)
         INSERT INTO entries (posting_id, account_id, amount_minor) SELECT id, 2, 5 FROM p`,
      ),
      /unbalanced/,
    );
    await assert.rejects(
      pool.query("UPDATE holds SET state = 'held' WHERE state <> 'held'"),
      /forbidden change/,
    );
    await assertConsistent();
  });

  it("conserves money after a concurrent mix, and every snapshot taken meanwhile is consistent", async () => {
    const users = await Promise.all(Array.from({ length: 8 }, (_, i) => newUser(i * 100)));
    const pick = (i: number) => users[i % users.length] ?? 0;
    let running = true;
    const audits: Promise<void>[] = [];
    const auditor = (async () => {
      while (running) {
        audits.push(assertConsistent());
        await audits.at(-1);
      }
    })();

    const work = Array.from({ length: 200 }, async (_, i) => {
      const source = pick(i);
      const dest = pick(i * 7 + 3);
      const kind = i % 5;
      try {
        if (kind === 0) {
          await deposit(pool, {
            user_id: source,
            amount: 1 + (i % 50),
            idempotency_key: `mix-${i % 40}-${source}`,
          });
          return;
        }
        const t = randomUUID();
        await holdFunds(pool, {
          transfer_id: t,
          source_user_id: source,
          dest_user_id: dest,
          amount: 1 + (i % 90),
        });
        if (kind === 1) return; // left in flight
        if (kind === 2 || kind === 3) await Promise.all([postHold(pool, t), postHold(pool, t)]);
        else await Promise.all([voidHold(pool, t), voidHold(pool, t)]);
      } catch (error) {
        const code = (error as { code?: string }).code ?? "";
        // Business refusals are expected in a random mix; anything else is a failure.
        if (!["insufficient_funds", "same_wallet", "idempotency_key_reused"].includes(code)) throw error;
      }
    });
    await Promise.all(work);
    running = false;
    await auditor;
    await Promise.all(audits);
    assert.ok(audits.length > 0);

    const report = await audit(pool);
    assert.ok(report.holds_by_state.held > 0);
    for (const user of users) assert.equal(await balanceOf(user), await journalSumOf(user));
    // I1 in its plainest form: wallets + clearing + external = 0.
    const total =
      BigInt(report.total_wallet_balance) + BigInt(report.clearing_balance) + BigInt(report.external_balance);
    assert.equal(total, 0n);
    await assertConsistent();
  });
});
