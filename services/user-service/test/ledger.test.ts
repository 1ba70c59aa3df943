/**
 * The ledger against a real PostgreSQL (TEST_LEDGER_DATABASE_URL; skipped when unset). Each run
 * migrates into a fresh schema of its own and drops it at the end, so the database is left as
 * it was found and runs do not see each other.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { LEDGER_BATCH_MAX, type LedgerOperation } from "#packages/contracts/ledger.ts";
import { minorFromPg } from "#packages/contracts/money.ts";
import { createPool, type Pool } from "#packages/pg/index.ts";
import { openTestSchema, type TestSchema } from "#packages/pg/test-schema.ts";
import { assertSystemAccounts } from "../src/ledger/accounts.ts";
import { audit } from "../src/ledger/audit.ts";
import { deposit } from "../src/ledger/deposits.ts";
import {
  applyBatch,
  getHold,
  holdFunds,
  type LedgerOperationResult,
  postHold,
  voidHold,
} from "../src/ledger/steps.ts";
import { closeUser, createUser } from "../src/ledger/users.ts";

const BASE_URL = process.env.TEST_LEDGER_DATABASE_URL ?? "";
const SCHEMA = `user_service_test_${process.pid}_${Date.now()}`;
const FAKE_HASH = "scrypt$not-a-real-hash"; // hashing is unit-tested; here it would only be slow

let pool: Pool;
let test_schema: TestSchema | undefined;
let admin: Pool;
/** A pool of its own name, so a test can see in pg_stat_activity when its query waits for a lock. */
let racer: Pool;
const RACER_NAME = `racer_${process.pid}_${Date.now()}`;
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

const hold = (transfer_id: string, source_user_id: number, dest_user_id: number, amount: number) =>
  ({ op: "hold", transfer_id, source_user_id, dest_user_id, amount }) as const satisfies LedgerOperation;
const transfer = (transfer_id: string, source_user_id: number, dest_user_id: number, amount: number) =>
  ({ op: "transfer", transfer_id, source_user_id, dest_user_id, amount }) as const satisfies LedgerOperation;
const post = (transfer_id: string) => ({ op: "post", transfer_id }) as const satisfies LedgerOperation;
const voiding = (transfer_id: string) => ({ op: "void", transfer_id }) as const satisfies LedgerOperation;

/** The results' shape without the rows: what a reader of a batch's answer checks first. */
function outcomes(results: LedgerOperationResult[]): string[] {
  return results.map((r) => (r.ok ? `ok:${r.hold.state}` : r.code));
}

function okHold(result: LedgerOperationResult | undefined) {
  assert.ok(result?.ok, `expected ok, got ${JSON.stringify(result)}`);
  return result.hold;
}

/** Waits until a query of the racer pool is blocked on a lock (bounded: fails after 5 s). */
async function racerBlocked(): Promise<void> {
  for (let i = 0; i < 500; i++) {
    const { rowCount } = await admin.query(
      "SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
      [RACER_NAME],
    );
    if (rowCount !== 0) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  assert.fail("the racer never waited for the lock");
}

/** What a refused step must leave alone: these wallets and holds, and the journal's size. */
async function snapshot(user_ids: number[], transfer_ids: string[]) {
  const wallets = await pool.query(
    "SELECT user_id, balance_minor, updated_at FROM accounts WHERE user_id = ANY($1) ORDER BY user_id",
    [user_ids],
  );
  const holds = await pool.query(
    "SELECT * FROM holds WHERE transfer_id = ANY($1::uuid[]) ORDER BY transfer_id",
    [transfer_ids],
  );
  const sizes = await pool.query(
    "SELECT (SELECT count(*) FROM postings) AS postings, (SELECT count(*) FROM entries) AS entries",
  );
  return {
    wallets: wallets.rows,
    holds: holds.rows,
    sizes: sizes.rows[0] as { postings: string; entries: string },
  };
}

describe("ledger on PostgreSQL", {
  skip: BASE_URL === "" ? "TEST_LEDGER_DATABASE_URL is not set" : false,
}, () => {
  before(async () => {
    test_schema = await openTestSchema(BASE_URL, SCHEMA, {
      application_name: "user-service-test",
      pool_max: 30,
      migrations: join(import.meta.dirname, "..", "migrations"),
    });
    ({ admin, pool } = test_schema);
    racer = createPool(test_schema.url, { max: 2, application_name: RACER_NAME });
    await assertSystemAccounts(pool);
  });

  after(async () => {
    await racer?.end();
    await test_schema?.drop();
  });

  it("journals the opening balance as a deposit from the external account", async () => {
    const alice = await newUser(1000);
    assert.equal(await balanceOf(alice), 1000);
    assert.equal(await journalSumOf(alice), 1000);
    await assertConsistent();
  });

  it("the audit names a wallet whose balance is not its journal's sum", async () => {
    const user = await newUser(100);
    await pool.query("UPDATE accounts SET balance_minor = balance_minor + 1 WHERE user_id = $1", [user]);
    try {
      const report = await audit(pool);
      assert.deepEqual(report.wallets_mismatching_journal, [user]);
      assert.equal(report.consistent, false);
    } finally {
      await pool.query("UPDATE accounts SET balance_minor = balance_minor - 1 WHERE user_id = $1", [user]);
    }
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
      holdFunds(pool, { ...hold, transfer_id: randomUUID(), source_user_id: c, dest_user_id: a }),
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
  // -------------------------------------------------------------------------------------------
  // Batches: many steps in one statement and one commit.

  it("a mixed batch answers each step in input order, and the journal stays consistent", async () => {
    const a = await newUser(1000);
    const b = await newUser(0);
    const c = await newUser(50);
    const toPost = randomUUID();
    const toVoid = randomUUID();
    await holdFunds(pool, { transfer_id: toPost, source_user_id: a, dest_user_id: b, amount: 200 });
    await holdFunds(pool, { transfer_id: toVoid, source_user_id: a, dest_user_id: c, amount: 300 });
    assert.equal(await balanceOf(a), 500);

    const fresh = randomUUID();
    const missing = randomUUID();
    const missingToo = randomUUID();
    const results = await applyBatch(pool, [
      hold(fresh, a, b, 100),
      hold(randomUUID(), c, b, 51),
      post(toPost),
      voiding(toVoid),
      hold(randomUUID(), a, a, 1),
      post(missing),
      hold(randomUUID(), a, 987654321, 1),
      voiding(missingToo),
    ]);
    assert.deepEqual(outcomes(results), [
      "ok:held",
      "insufficient_funds",
      "ok:posted",
      "ok:voided",
      "same_wallet",
      "hold_not_found",
      "dest_not_found",
      "hold_not_found",
    ]);
    // The single-step API's messages, word for word.
    assert.deepEqual(
      results.flatMap((r) => (r.ok ? [] : [r.message])),
      [
        `user ${c} has less than 51 minor units`,
        "source and destination are the same user",
        `no hold for transfer ${missing}`,
        "user 987654321 not found",
        `no hold for transfer ${missingToo}`,
      ],
    );
    const held = okHold(results[0]);
    assert.equal(held.transfer_id, fresh);
    // Steps run in lock order (wallet, then transfer id), not input order: the void of toVoid
    // refunds a before or after this hold debits a, as their transfer ids sort.
    assert.equal(held.source_balance_before_minor, fresh < toVoid ? "500" : "800");
    assert.equal(okHold(results[2]).dest_balance_before_minor, "0");
    assert.equal(await balanceOf(a), 500 - 100 + 300);
    assert.equal(await balanceOf(b), 200);
    assert.equal(await balanceOf(c), 50);
    assert.deepEqual(await postingsFor(fresh), { hold: 1 });
    assert.deepEqual(await postingsFor(toPost), { hold: 1, post: 1 });
    assert.deepEqual(await postingsFor(toVoid), { hold: 1, void: 1 });
    for (const user of [a, b, c]) assert.equal(await balanceOf(user), await journalSumOf(user));
    // The single-step readers see what the batch wrote.
    assert.deepEqual(await getHold(pool, fresh), held);
    await assertConsistent();
  });

  it("refusals in a batch change nothing and do not stop the other steps", async () => {
    const a = await newUser(100);
    const b = await newUser(0);
    const gone = await newUser(0); // closed below: as a source and as a destination
    const e = await newUser(10);
    const posted = randomUUID();
    const voided = randomUUID();
    const toGone = randomUUID();
    await holdFunds(pool, { transfer_id: posted, source_user_id: a, dest_user_id: b, amount: 10 });
    await postHold(pool, posted);
    await holdFunds(pool, { transfer_id: voided, source_user_id: a, dest_user_id: b, amount: 10 });
    await voidHold(pool, voided);
    await holdFunds(pool, { transfer_id: toGone, source_user_id: a, dest_user_id: gone, amount: 10 });
    const mismatched = randomUUID();
    await holdFunds(pool, { transfer_id: mismatched, source_user_id: a, dest_user_id: b, amount: 5 });
    // The close race, simulated directly (closeUser would refuse: a transfer is in flight).
    await pool.query("UPDATE users SET deleted_at = now() WHERE id = $1", [gone]);

    const watched = [a, b, gone];
    const transfers = [posted, voided, toGone, mismatched];
    const before = await snapshot(watched, transfers);
    const applied = randomUUID();
    const results = await applyBatch(pool, [
      hold(randomUUID(), a, b, 76), // a has 75 left
      hold(randomUUID(), a, a, 1),
      hold(randomUUID(), a, gone, 1),
      hold(randomUUID(), gone, b, 1),
      hold(applied, e, b, 10), // the one that goes through
      hold(mismatched, a, b, 6),
      post(voided),
      voiding(posted),
      post(toGone),
      post(randomUUID()),
      voiding(randomUUID()),
    ]);
    assert.deepEqual(outcomes(results), [
      "insufficient_funds",
      "same_wallet",
      "dest_not_found",
      "source_not_found",
      "ok:held",
      "hold_mismatch",
      "hold_voided",
      "hold_posted",
      "dest_unavailable",
      "hold_not_found",
      "hold_not_found",
    ]);
    const messages = results.map((r) => (r.ok ? "" : r.message));
    assert.equal(messages[5], `transfer ${mismatched} was held with other parties or amount`);
    assert.equal(messages[6], `transfer ${voided} was already voided`);
    assert.equal(messages[7], `transfer ${posted} was already posted`);
    assert.equal(messages[8], `user ${gone} cannot be credited (closed or balance limit)`);

    const after = await snapshot(watched, transfers);
    assert.deepEqual(after.wallets, before.wallets);
    assert.deepEqual(after.holds, before.holds);
    // Exactly the one hold that went through was journaled: one posting, two entries.
    assert.equal(Number(after.sizes.postings), Number(before.sizes.postings) + 1);
    assert.equal(Number(after.sizes.entries), Number(before.sizes.entries) + 2);
    assert.equal(await balanceOf(e), 0);
    assert.deepEqual(await postingsFor(applied), { hold: 1 });
    await assertConsistent();
  });

  it("a replayed batch answers as the first time and moves no money twice", async () => {
    const a = await newUser(1000);
    const b = await newUser(0);
    const c = await newUser(0);
    const t1 = randomUUID();
    const t2 = randomUUID();
    const t3 = randomUUID();
    const first = await applyBatch(pool, [hold(t1, a, b, 100), hold(t2, a, c, 200), hold(t3, b, c, 1)]);
    assert.deepEqual(outcomes(first), ["ok:held", "ok:held", "insufficient_funds"]);
    assert.deepEqual(
      await applyBatch(pool, [hold(t1, a, b, 100), hold(t2, a, c, 200), hold(t3, b, c, 1)]),
      first,
    );

    const settle = [post(t1), voiding(t2), hold(randomUUID(), c, a, 5)];
    const second = await applyBatch(pool, settle);
    assert.deepEqual(outcomes(second), ["ok:posted", "ok:voided", "insufficient_funds"]);
    const balances = [await balanceOf(a), await balanceOf(b), await balanceOf(c)];
    assert.deepEqual(balances, [900, 100, 0]);
    for (let replay = 0; replay < 3; replay++) {
      assert.deepEqual(await applyBatch(pool, settle), second);
      // A hold retried after its post or void answers with the hold as it now stands.
      assert.deepEqual(outcomes(await applyBatch(pool, [hold(t1, a, b, 100), hold(t2, a, c, 200)])), [
        "ok:posted",
        "ok:voided",
      ]);
    }
    assert.deepEqual([await balanceOf(a), await balanceOf(b), await balanceOf(c)], balances);
    assert.deepEqual(await postingsFor(t1), { hold: 1, post: 1 });
    assert.deepEqual(await postingsFor(t2), { hold: 1, void: 1 });
    assert.deepEqual(await postingsFor(t3), {});
    await assertConsistent();
  });

  it("a hold retried in a batch with another amount or other parties is refused hold_mismatch", async () => {
    const a = await newUser(1000);
    const b = await newUser(0);
    const c = await newUser(0);
    const t = randomUUID();
    await holdFunds(pool, { transfer_id: t, source_user_id: a, dest_user_id: b, amount: 100 });
    const other = randomUUID();
    const results = await applyBatch(pool, [hold(t, a, b, 101), hold(other, a, c, 1)]);
    assert.deepEqual(outcomes(results), ["hold_mismatch", "ok:held"]);
    for (const retry of [hold(t, a, c, 100), hold(t, c, b, 100), hold(t.toUpperCase(), a, b, 99)]) {
      assert.deepEqual(outcomes(await applyBatch(pool, [retry])), ["hold_mismatch"]);
    }
    // The same hold with the id in capitals is the same transfer (a UUID), not a new one.
    assert.equal(okHold((await applyBatch(pool, [hold(t.toUpperCase(), a, b, 100)]))[0]).transfer_id, t);
    assert.equal(await balanceOf(a), 1000 - 100 - 1);
    assert.deepEqual(await postingsFor(t), { hold: 1 });
    await assertConsistent();
  });

  it("copies of one hold in two concurrent batches move the money once", async () => {
    for (let round = 0; round < 10; round++) {
      const a = await newUser(300);
      const b = await newUser(0);
      const c = await newUser(10);
      const t = randomUUID();
      // Each batch also moves other money, so the copies meet inside bigger transactions.
      const [left, right] = await Promise.all([
        applyBatch(pool, [hold(randomUUID(), c, b, 1), hold(t, a, b, 300)]),
        applyBatch(pool, [hold(t, a, b, 300), hold(randomUUID(), c, a, 1)]),
      ]);
      assert.deepEqual(outcomes(left), ["ok:held", "ok:held"]);
      assert.deepEqual(outcomes(right), ["ok:held", "ok:held"]);
      assert.deepEqual(okHold(left[1]), okHold(right[0]));
      assert.equal(okHold(left[1]).source_balance_before_minor, "300");
      assert.deepEqual(await postingsFor(t), { hold: 1 });
      // a: 300 held once, 1 received on hold (still in clearing): 0 in the wallet.
      assert.equal(await balanceOf(a), 0);
      assert.equal(await balanceOf(c), 8);
    }
    await assertConsistent();
  });

  it("two batches over the same wallets in opposite orders neither deadlock nor break the audit", async () => {
    const wallets = await Promise.all(Array.from({ length: 5 }, () => newUser(10_000)));
    const pairs = wallets.flatMap((s) => wallets.filter((d) => d !== s).map((d) => [s, d] as const));
    let previous: string[] = [];
    for (let round = 0; round < 15; round++) {
      const forward = pairs.map(([s, d]) => hold(randomUUID(), s, d, 1 + round));
      const backward = pairs.map(([s, d]) => hold(randomUUID(), d, s, 2)).reverse();
      // The previous round's holds: one batch posts them while the other voids them, listed in
      // opposite orders, so that (without the global lock order) the two would lock the same
      // holds and wallets in opposite orders.
      const left = [...forward, ...previous.map(post)];
      const right = [...previous.map(voiding).reverse(), ...backward];
      assert.ok(left.length <= LEDGER_BATCH_MAX && right.length <= LEDGER_BATCH_MAX);
      const [l, r] = await Promise.all([applyBatch(pool, left), applyBatch(pool, right)]);
      for (const result of [...l.slice(0, forward.length), ...r.slice(-backward.length)]) okHold(result);
      // Each earlier hold was posted or voided, exactly once: one batch won, the other was refused.
      previous.forEach((transfer_id, i) => {
        const posted = l[forward.length + i];
        const voided = r[previous.length - 1 - i];
        const won = [posted, voided].filter((x) => x?.ok);
        assert.equal(
          won.length,
          1,
          `transfer ${transfer_id}: ${outcomes([posted, voided].flatMap((x) => (x ? [x] : [])))}`,
        );
        const loser = [posted, voided].find((x) => x !== undefined && !x.ok);
        assert.match(loser?.ok === false ? loser.code : "", /^hold_(posted|voided)$/);
      });
      previous = [...forward, ...backward].map((h) => h.transfer_id);
    }
    let total = 0n;
    for (const user of wallets) total += BigInt(await balanceOf(user));
    const { rows } = await pool.query<{ held: string }>(
      "SELECT coalesce(sum(amount_minor), 0) AS held FROM holds WHERE transfer_id = ANY($1::uuid[])",
      [previous],
    );
    // Money only moved among these wallets: what they hold plus their last round in clearing.
    assert.equal(total + BigInt(rows[0]?.held ?? "NaN"), 50_000n);
    await assertConsistent();
  });

  it("a transfer step debits and credits in one commit, once under retries, and takes over a hold", async () => {
    const a = await newUser(1_000);
    const b = await newUser(50);
    const t = randomUUID();
    const [first] = await applyBatch(pool, [transfer(t, a, b, 300)]);
    const moved = okHold(first);
    assert.equal(moved.state, "posted");
    assert.equal(moved.source_balance_before_minor, "1000");
    assert.equal(moved.dest_balance_before_minor, "50");
    const [again] = await applyBatch(pool, [transfer(t, a, b, 300)]);
    assert.deepEqual(okHold(again), moved, "a retry answers with the first step's hold");
    assert.deepEqual(await postingsFor(t), { hold: 1, post: 1 });
    assert.equal(await balanceOf(a), 700);
    assert.equal(await balanceOf(b), 350);
    const [mismatch] = await applyBatch(pool, [transfer(t, a, b, 301)]);
    assert.equal(mismatch?.ok === false && mismatch.code, "hold_mismatch");
    // A hold an earlier version made is posted by the step.
    const h = randomUUID();
    await holdFunds(pool, { transfer_id: h, source_user_id: a, dest_user_id: b, amount: 100 });
    const [posted] = await applyBatch(pool, [transfer(h, a, b, 100)]);
    assert.equal(okHold(posted).state, "posted");
    assert.equal(await balanceOf(b), 450);
    await assertConsistent();
  });

  it("a transfer whose credit cannot land is refunded within its step, and its refusals stay final", async () => {
    const a = await newUser(1_000);
    const full = await newUser(Number.MAX_SAFE_INTEGER - 5);
    const t = randomUUID();
    const [refused] = await applyBatch(pool, [transfer(t, a, full, 300)]);
    assert.equal(refused?.ok === false && refused.code, "dest_unavailable");
    assert.equal(await balanceOf(a), 1_000, "no money moved");
    assert.equal((await getHold(pool, t))?.state, "voided");
    const [again] = await applyBatch(pool, [transfer(t, a, full, 300)]);
    assert.equal(again?.ok === false && again.code, "dest_unavailable", "a retry answers the same");
    // Not enough money: refused, and still refused once the money is there.
    const b = await newUser(0);
    const poor = randomUUID();
    const [funds] = await applyBatch(pool, [transfer(poor, b, a, 10)]);
    assert.equal(funds?.ok === false && funds.code, "insufficient_funds");
    await deposit(pool, { user_id: b, amount: 10, idempotency_key: null });
    const [later] = await applyBatch(pool, [transfer(poor, b, a, 10)]);
    assert.equal(later?.ok === false && later.code, "insufficient_funds");
    assert.equal(await balanceOf(b), 10);
    const [same] = await applyBatch(pool, [transfer(randomUUID(), a, a, 1)]);
    assert.equal(same?.ok === false && same.code, "same_wallet");
    await assertConsistent();
  });

  it("transfer steps in batches over the same wallets in opposite orders neither deadlock nor break the audit", async () => {
    const wallets = await Promise.all(Array.from({ length: 5 }, () => newUser(10_000)));
    const pairs = wallets.flatMap((s) => wallets.filter((d) => d > s).map((d) => [s, d] as const));
    let previous: string[] = [];
    for (let round = 0; round < 10; round++) {
      // Upwards in one batch, downwards in the other: each step locks its payer's wallet, then its
      // payee's, so without the batch-wide lock order the two would wait for each other (the
      // first upward step holds the lowest wallet and wants the next, the first downward step
      // holds that one and wants the lowest).
      const forward = pairs.map(([s, d]) => transfer(randomUUID(), s, d, 1 + round));
      const backward = pairs.map(([s, d]) => transfer(randomUUID(), d, s, 2)).reverse();
      const held = pairs.slice(0, 5).map(([s, d]) => hold(randomUUID(), s, d, 1));
      // Two-phase steps ride along: one batch posts the previous round's holds while the other
      // voids them, so the wallets each batch locks interleave.
      const left = [...forward, ...previous.map(post), ...held];
      const right = [...previous.map(voiding).reverse(), ...backward];
      assert.ok(left.length <= LEDGER_BATCH_MAX && right.length <= LEDGER_BATCH_MAX);
      const [l, r] = await Promise.all([applyBatch(pool, left), applyBatch(pool, right)]);
      for (const result of [...l.slice(0, forward.length), ...r.slice(-backward.length)]) {
        assert.equal(okHold(result).state, "posted");
      }
      previous = held.map((h) => h.transfer_id);
    }
    let total = 0n;
    for (const user of wallets) total += BigInt(await balanceOf(user));
    const { rows } = await pool.query<{ held: string }>(
      "SELECT coalesce(sum(amount_minor), 0) AS held FROM holds WHERE transfer_id = ANY($1::uuid[]) AND state = 'held'",
      [previous],
    );
    assert.equal(total + BigInt(rows[0]?.held ?? "NaN"), 50_000n);
    await assertConsistent();
  });

  it("a user closed while a step waits for their wallet is seen: no debit or credit after the close", async () => {
    // Source: the close holds the wallet lock and commits while the hold waits for it.
    const s = await newUser(100);
    const d = await newUser(0);
    const closer = await pool.connect();
    try {
      await closer.query("BEGIN");
      await closer.query("SELECT 1 FROM accounts WHERE user_id = $1 FOR UPDATE", [s]);
      // closeUser would refuse a non-zero balance; the point is a close committing meanwhile.
      await closer.query("UPDATE users SET deleted_at = now() WHERE id = $1", [s]);
      const pending = applyBatch(racer, [hold(randomUUID(), s, d, 10)]);
      await racerBlocked();
      await closer.query("COMMIT");
      assert.deepEqual(outcomes(await pending), ["source_not_found"]);
    } finally {
      closer.release();
    }
    assert.equal(await balanceOf(s), 100);

    // Destination: closed while the post waits for its wallet; the post is refused, the void works.
    const s2 = await newUser(100);
    const d2 = await newUser(0);
    const t = randomUUID();
    await holdFunds(pool, { transfer_id: t, source_user_id: s2, dest_user_id: d2, amount: 10 });
    const closer2 = await pool.connect();
    try {
      await closer2.query("BEGIN");
      await closer2.query("SELECT 1 FROM accounts WHERE user_id = $1 FOR UPDATE", [d2]);
      await closer2.query("UPDATE users SET deleted_at = now() WHERE id = $1", [d2]);
      const pending = applyBatch(racer, [post(t)]);
      await racerBlocked();
      await closer2.query("COMMIT");
      assert.deepEqual(outcomes(await pending), ["dest_unavailable"]);
    } finally {
      closer2.release();
    }
    assert.equal(await balanceOf(d2), 0);
    assert.equal((await getHold(pool, t))?.state, "held");
    assert.deepEqual(outcomes(await applyBatch(pool, [voiding(t)])), ["ok:voided"]);
    assert.equal(await balanceOf(s2), 100);

    // And the real closeUser racing a hold and its post: a closed user never ends with money.
    for (let round = 0; round < 20; round++) {
      const source = await newUser(100);
      const dest = await newUser(0);
      const transfer = randomUUID();
      const [closed] = await Promise.allSettled([
        closeUser(pool, dest),
        (async () => {
          const [held] = await applyBatch(pool, [hold(transfer, source, dest, 10)]);
          if (!held?.ok) return;
          const [posted] = await applyBatch(pool, [post(transfer)]);
          if (!posted?.ok) await applyBatch(pool, [voiding(transfer)]);
        })(),
      ]);
      if (closed.status === "fulfilled") {
        assert.equal(await balanceOf(dest), 0);
        assert.equal(await journalSumOf(dest), 0);
      } else {
        assert.match(
          String((closed.reason as { code?: string }).code),
          /^(transfers_in_flight|balance_not_zero)$/,
        );
      }
      assert.equal((await balanceOf(source)) + (await balanceOf(dest)), 100);
    }
    await assertConsistent();
  });

  it("a batch is 1..LEDGER_BATCH_MAX steps, one per transfer; a full one commits once", async () => {
    const a = await newUser(LEDGER_BATCH_MAX);
    const b = await newUser(0);
    await assert.rejects(applyBatch(pool, []), /invariant/);
    const t = randomUUID();
    await assert.rejects(applyBatch(pool, [post(t), voiding(t)]), /more than once/);
    await assert.rejects(applyBatch(pool, [post(t), voiding(t.toUpperCase())]), /more than once/);
    const full = Array.from({ length: LEDGER_BATCH_MAX }, () => hold(randomUUID(), a, b, 1));
    await assert.rejects(applyBatch(pool, [...full, hold(randomUUID(), a, b, 1)]), /invariant/);
    const results = await applyBatch(pool, full);
    assert.deepEqual(new Set(outcomes(results)), new Set(["ok:held"]));
    assert.deepEqual(
      results.map((r) => okHold(r).transfer_id),
      full.map((h) => h.transfer_id),
    );
    // One wallet debited a hundred times in one transaction: each saw the balance the one before left.
    const befores = results.map((r) => Number(okHold(r).source_balance_before_minor)).sort((x, y) => y - x);
    assert.deepEqual(
      befores,
      Array.from({ length: LEDGER_BATCH_MAX }, (_, i) => LEDGER_BATCH_MAX - i),
    );
    assert.equal(await balanceOf(a), 0);
    const outcome = await applyBatch(
      pool,
      full.map((h) => post(h.transfer_id)),
    );
    assert.equal(outcome.filter((r) => r.ok).length, LEDGER_BATCH_MAX);
    assert.equal(await balanceOf(b), LEDGER_BATCH_MAX);
    await assertConsistent();
  });

  it("a refused hold is final: a copy that waited behind another batch's lock cannot debit later", async () => {
    // The saga's lost-answer race, replayed step by step: hold 1 waits behind another batch; its
    // retry, hold 2, is refused and the transfer ends FAILED; the payer is topped up; hold 1
    // resumes. It must answer as hold 2 did and take nothing.
    const a = await newUser(50);
    const b = await newUser(0);
    const c = await newUser(10);
    const t = randomUUID();
    const keyOf = async (id: string) =>
      Number((await pool.query<{ k: number }>("SELECT ledger_transfer_lock_key($1) AS k", [id])).rows[0]?.k);
    // A transfer whose advisory lock comes before t's in the batch's lock order.
    let blocker = randomUUID();
    while ((await keyOf(blocker)) >= (await keyOf(t))) blocker = randomUUID();

    const holder = await pool.connect();
    try {
      await holder.query("BEGIN");
      await holder.query("SELECT ledger_lock_transfer($1)", [blocker]);
      // 1. Hold 1 shares a batch with the blocked transfer, so it waits before reaching t.
      const first = applyBatch(racer, [hold(blocker, c, b, 1), hold(t, a, b, 100)]);
      await racerBlocked();
      // 2. Hold 2 is refused: the saga ends the transfer FAILED.
      const [second] = await applyBatch(pool, [hold(t, a, b, 100)]);
      assert.equal(second?.ok === false && second.code, "insufficient_funds");
      // 3. The payer is topped up.
      await deposit(pool, { user_id: a, amount: 100, idempotency_key: null });
      // 4. Hold 1 resumes.
      await holder.query("COMMIT");
      const [, resumed] = await first;
      assert.equal(resumed?.ok === false && resumed.code, "insufficient_funds");
    } finally {
      await holder.query("ROLLBACK").catch(() => {});
      holder.release();
    }
    assert.equal(await balanceOf(a), 150, "no money left the payer");
    assert.equal(await getHold(pool, t), null);
    assert.deepEqual(await postingsFor(t), {});
    // A sweep's retry, and a retry with other terms, get the same final word.
    await assert.rejects(
      holdFunds(pool, { transfer_id: t, source_user_id: a, dest_user_id: b, amount: 100 }),
      refusal("insufficient_funds"),
    );
    await assert.rejects(
      holdFunds(pool, { transfer_id: t, source_user_id: a, dest_user_id: b, amount: 99 }),
      refusal("hold_mismatch"),
    );
    await assertConsistent();
  });

  it("remembers every final hold refusal, and a refused batch's rollback forgets it", async () => {
    const a = await newUser(10);
    const b = await newUser(0);
    const missing = 987_654_321;
    const [noDest, noSource] = [randomUUID(), randomUUID()];
    const first = await applyBatch(pool, [hold(noDest, a, missing, 1), hold(noSource, missing, b, 1)]);
    assert.deepEqual(outcomes(first), ["dest_not_found", "source_not_found"]);
    assert.deepEqual(outcomes(await applyBatch(pool, [hold(noDest, a, missing, 1)])), ["dest_not_found"]);
    assert.deepEqual(outcomes(await applyBatch(pool, [hold(noSource, missing, b, 1)])), ["source_not_found"]);

    // A refusal inside a transaction that fails is not remembered: nobody was told it.
    const t = randomUUID();
    const client = await pool.connect();
    try {
      await client.query("BEGIN");
      const { rows } = await client.query<{ result: string }>(
        "SELECT (ledger_hold($1, $2, $3, 1000)).result",
        [t, a, b],
      );
      assert.equal(rows[0]?.result, "insufficient_funds");
      await client.query("ROLLBACK");
    } finally {
      client.release();
    }
    await deposit(pool, { user_id: a, amount: 1000, idempotency_key: null });
    assert.deepEqual(outcomes(await applyBatch(pool, [hold(t, a, b, 1000)])), ["ok:held"]);
    await assert.rejects(pool.query("DELETE FROM hold_refusals"), /forbidden/);
    await assertConsistent();
  });

  it("a refund always fits: credits leave room for the money held out of a wallet", async () => {
    const MAX = Number.MAX_SAFE_INTEGER;
    const a = await newUser(100);
    const b = await newUser(0);
    const c = await newUser(1);
    const t = randomUUID();
    okHold((await applyBatch(pool, [hold(t, a, b, 100)]))[0]);
    // a's 100 is out in clearing: a deposit may bring a to MAX - 100, not one more.
    await deposit(pool, { user_id: a, amount: MAX - 100, idempotency_key: null });
    await assert.rejects(
      deposit(pool, { user_id: a, amount: 1, idempotency_key: null }),
      refusal("balance_limit_exceeded"),
    );
    // Nor can a payment to a take that room.
    const toA = randomUUID();
    okHold((await applyBatch(pool, [hold(toA, c, a, 1)]))[0]);
    assert.deepEqual(outcomes(await applyBatch(pool, [post(toA)])), ["dest_unavailable"]);
    // So the refund lands, whatever a received meanwhile.
    assert.deepEqual(outcomes(await applyBatch(pool, [voiding(t), voiding(toA)])), [
      "ok:voided",
      "ok:voided",
    ]);
    assert.equal(await balanceOf(a), MAX);
    assert.equal(await balanceOf(c), 1);
    await assertConsistent();
  });
});
