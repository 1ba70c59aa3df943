/**
 * The posts of one ledger_apply_batch call made in one pass (migrations/007_set_based_posts.sql)
 * against a real PostgreSQL (TEST_LEDGER_DATABASE_URL; skipped when unset): the same calls run on
 * a schema migrated up to 006 (every post its own ledger_post) and on the current one, and every
 * answer, balance, bound, hold and journal line must come out the same.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import type { FundingItem, LedgerOperation } from "#packages/contracts/ledger.ts";
import { createPool, type Pool, withTransaction } from "#packages/pg/index.ts";
import { openTestSchema, type TestSchema } from "#packages/pg/test-schema.ts";
import { assertSystemAccounts } from "../src/ledger/accounts.ts";
import { audit } from "../src/ledger/audit.ts";
import { fundBatch } from "../src/ledger/funding.ts";
import { applyBatch } from "../src/ledger/steps.ts";
import { createUser } from "../src/ledger/users.ts";
import {
  answerOf,
  brokenChains,
  codesOf,
  dump,
  idsOf,
  MIGRATIONS,
  openComparison,
} from "./ledger-compare.ts";

const BASE_URL = process.env.TEST_LEDGER_DATABASE_URL ?? "";
const STAMP = `${process.pid}_${Date.now()}`;
const MAX = Number.MAX_SAFE_INTEGER;
const APPLICATION_NAME = "user-service-posts-test";

let current: TestSchema | undefined;
let baseline: TestSchema | undefined;

const post = (transfer_id: string) => ({ op: "post", transfer_id }) as const satisfies LedgerOperation;
const voiding = (transfer_id: string) => ({ op: "void", transfer_id }) as const satisfies LedgerOperation;

/** Waits until a ledger_apply_batch call of this file's pools waits for a lock (bounded: 10 s). */
async function waitingForLock(admin: Pool): Promise<void> {
  for (let i = 0; i < 1000; i++) {
    const { rowCount } = await admin.query(
      `SELECT 1 FROM pg_stat_activity
       WHERE application_name = $1 AND wait_event_type = 'Lock' AND query LIKE '%ledger_apply_batch%'`,
      [APPLICATION_NAME],
    );
    if (rowCount !== 0) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  assert.fail("the call never waited for the lock");
}

/**
 * Users made in one order, so that both schemas give them the same ids. `tight` opens the wallet
 * near 2^53-1 and leaves it a bound that overstates its held-out money.
 */
async function people(pool: Pool, prefix: string) {
  let n = 0;
  const user = async (opening_balance: number) => {
    n += 1;
    const row = await createUser(pool, {
      username: `${prefix}${n}`,
      password_hash: "scrypt$not-a-real-hash",
      opening_balance,
    });
    return Number(row.id);
  };
  return {
    payer: await user(1_000_000),
    a: await user(0),
    b: await user(5),
    closed: await user(0),
    ceiling: await user(MAX - 250),
    tight: await user(MAX - 2_000),
  };
}

type People = Awaited<ReturnType<typeof people>>;

/** Funds one batch of `items` from the payer and checks every item was held. */
async function funded(pool: Pool, payer: number, disbursement_id: string, items: FundingItem[]) {
  const results = await fundBatch(pool, { disbursement_id, source_user_id: payer, items });
  assert.deepEqual(
    results.map((r) => r.result),
    items.map(() => "ok"),
  );
}

/**
 * A pack of posts with several credits to one payee, a closed payee, a missing, a voided and an
 * already posted hold, in an input order that is not the lock order.
 */
async function packScenario(pool: Pool, p: People, ids: string[], disbursement_id: string) {
  const [a1, a2, a3, b1, b2, c1, voided, posted, missing] = ids as [string, ...string[]];
  const item = (transfer_id: string | undefined, dest_user_id: number, amount: number) => ({
    transfer_id: transfer_id ?? "",
    dest_user_id,
    amount,
  });
  await funded(pool, p.payer, disbursement_id, [
    item(a1, p.a, 101),
    item(a2, p.a, 202),
    item(a3, p.a, 303),
    item(b1, p.b, 40),
    item(b2, p.b, 50),
    item(c1, p.closed, 60),
    item(voided, p.a, 70),
    item(posted, p.b, 80),
  ]);
  const before = await applyBatch(pool, [voiding(voided ?? ""), post(posted ?? "")]);
  assert.deepEqual(codesOf(before), ["ok:voided", "ok:posted"]);
  // A payee closed while a hold to them was in flight (a close racing a hold's lockless check of
  // the payee): set directly, as closeUser refuses a user with holds in flight.
  await pool.query("UPDATE users SET deleted_at = now() WHERE id = $1", [p.closed]);
  const order = [b2, missing, a3, c1, a1, posted, voided, b1, a2] as string[];
  return applyBatch(pool, order.map(post));
}

/** Credits near 2^53-1: one of two credits to the ceiling payee is refused alone. */
async function ceilingScenario(pool: Pool, p: People, ids: string[], disbursement_id: string) {
  const [d1, d2, t1, a1, own, back] = ids as [string, ...string[]];
  // The tight payee holds 1,500 out of their wallet and that hold is posted: their bound
  // overstates by 1,500, so a credit fits only by the exact sum.
  await funded(pool, p.tight, randomUUID(), [{ transfer_id: own ?? "", dest_user_id: p.a, amount: 1_500 }]);
  assert.deepEqual(codesOf(await applyBatch(pool, [post(own ?? "")])), ["ok:posted"]);
  await funded(pool, p.payer, disbursement_id, [
    { transfer_id: d1 ?? "", dest_user_id: p.ceiling, amount: 200 },
    { transfer_id: d2 ?? "", dest_user_id: p.ceiling, amount: 200 },
    { transfer_id: t1 ?? "", dest_user_id: p.tight, amount: 2_500 },
    { transfer_id: a1 ?? "", dest_user_id: p.a, amount: 9 },
    { transfer_id: back ?? "", dest_user_id: p.b, amount: 11 },
  ]);
  return applyBatch(pool, [
    post(d1 ?? ""),
    post(t1 ?? ""),
    post(a1 ?? ""),
    post(d2 ?? ""),
    voiding(back ?? ""),
  ]);
}

/** Posts, holds and voids in one call: the posts between a hold and a void form runs of their own. */
async function mixedScenario(pool: Pool, p: People, ids: string[], disbursement_id: string) {
  const [x1, x2, x3, x4, x5, h1, h2] = ids as [string, ...string[]];
  await funded(pool, p.payer, disbursement_id, [
    { transfer_id: x1 ?? "", dest_user_id: p.a, amount: 1 },
    { transfer_id: x2 ?? "", dest_user_id: p.b, amount: 2 },
    { transfer_id: x3 ?? "", dest_user_id: p.b, amount: 3 },
    { transfer_id: x4 ?? "", dest_user_id: p.a, amount: 4 },
    { transfer_id: x5 ?? "", dest_user_id: p.b, amount: 5 },
  ]);
  return applyBatch(pool, [
    post(x1 ?? ""),
    { op: "hold", transfer_id: h1 ?? "", source_user_id: p.a, dest_user_id: p.b, amount: 100 },
    post(x2 ?? ""),
    voiding(x3 ?? ""),
    { op: "hold", transfer_id: h2 ?? "", source_user_id: p.b, dest_user_id: p.a, amount: 7 },
    post(x4 ?? ""),
    post(x5 ?? ""),
  ]);
}

/** Runs every scenario on one schema and answers its answers and its ledger. */
async function runAll(pool: Pool, ids: string[][]) {
  const p = await people(pool, "poster");
  const [pack, ceiling, mixed, disbursements] = ids as [string[], string[], string[], string[]];
  const answers = {
    pack: await packScenario(pool, p, pack, disbursements[0] ?? ""),
    ceiling: await ceilingScenario(pool, p, ceiling, disbursements[1] ?? ""),
    mixed: await mixedScenario(pool, p, mixed, disbursements[2] ?? ""),
  };
  return {
    p,
    answers,
    ledger: await dump(pool),
    report: await audit(pool),
    chains: await brokenChains(pool),
  };
}

describe("set-based posts on PostgreSQL", {
  skip: BASE_URL === "" ? "TEST_LEDGER_DATABASE_URL is not set" : false,
}, () => {
  before(async () => {
    // The ledger as it was before 007: every post its own ledger_post.
    ({ current, baseline } = await openComparison(
      BASE_URL,
      `user_service_posts_${STAMP}`,
      6,
      APPLICATION_NAME,
    ));
  });

  after(async () => {
    await current?.drop();
    await baseline?.drop();
  });

  it("answers, balances, bounds, holds and journal are those of one ledger_post per item", async () => {
    assert.ok(current && baseline);
    const ids = [idsOf(9), idsOf(6), idsOf(7), idsOf(3)];
    const now = await runAll(current.pool, ids);
    const then = await runAll(baseline.pool, ids);

    const { p } = now;
    assert.deepEqual(codesOf(now.answers.pack), [
      "ok:posted",
      "hold_not_found",
      "ok:posted",
      "dest_unavailable",
      "ok:posted",
      "ok:posted",
      "hold_voided",
      "ok:posted",
      "ok:posted",
    ]);
    // One of the two credits to the payee near 2^53-1 is refused alone (the one later in lock
    // order, that is by transfer id); the tight payee is credited by the exact sum.
    const ceiling = codesOf(now.answers.ceiling);
    assert.deepEqual(ceiling.slice(1, 3), ["ok:posted", "ok:posted"]);
    assert.deepEqual([ceiling[0], ceiling[3]].sort(), ["dest_unavailable", "ok:posted"]);
    assert.equal(ceiling[4], "ok:voided");
    assert.deepEqual(codesOf(now.answers.mixed), [
      "ok:posted",
      "ok:held",
      "ok:posted",
      "ok:voided",
      "ok:held",
      "ok:posted",
      "ok:posted",
    ]);

    for (const name of ["pack", "ceiling", "mixed"] as const) {
      assert.deepEqual(now.answers[name].map(answerOf), then.answers[name].map(answerOf), name);
    }
    assert.deepEqual(now.ledger, then.ledger);
    assert.deepEqual(now.chains, []);
    assert.equal(now.report.consistent, true, JSON.stringify(now.report));
    assert.deepEqual(now.report, then.report);

    // The several credits to one payee: a running balance in transfer id order.
    const { rows } = await current.pool.query<{ amount_minor: string; balance_after_minor: string }>(
      `SELECT e.amount_minor, e.balance_after_minor FROM entries e
       JOIN postings p ON p.id = e.posting_id AND p.kind = 'post' AND p.transfer_id = ANY($2::uuid[])
       JOIN accounts a ON a.id = e.account_id AND a.user_id = $1
       ORDER BY e.id`,
      [p.a, ids[0]?.slice(0, 3)],
    );
    assert.deepEqual(
      rows.map((r) => Number(r.balance_after_minor)),
      rows.map((_, i) => rows.slice(0, i + 1).reduce((sum, r) => sum + Number(r.amount_minor), 0)),
    );
    assert.equal(rows.length, 3);
  });

  it("takes the payees' wallet locks in user id order: waiting for the last, it holds all the others", async () => {
    assert.ok(current);
    const { pool, admin, url } = current;
    const p = await people(pool, "order");
    const payees: number[] = [];
    for (let i = 0; i < 20; i++) {
      const row = await createUser(pool, {
        username: `orderpayee${i}`,
        password_hash: "scrypt$not-a-real-hash",
        opening_balance: 0,
      });
      payees.push(Number(row.id));
    }
    const pack = payees.map((dest_user_id, i) => ({
      transfer_id: randomUUID(),
      dest_user_id,
      amount: 1 + i,
    }));
    await funded(pool, p.payer, randomUUID(), pack);
    const last = payees[payees.length - 1];
    const racer = createPool(url, { max: 1, application_name: `posts_racer_${STAMP}` });
    const client = await racer.connect();
    try {
      await client.query("BEGIN");
      await client.query("SELECT FROM accounts WHERE user_id = $1 FOR UPDATE", [last]);
      const call = applyBatch(
        pool,
        [...pack].reverse().map((item) => post(item.transfer_id)),
      );
      await waitingForLock(admin);
      // Every other payee's wallet is locked by the waiting call: none can be taken now.
      const { rows } = await pool.query<{ free: string }>(
        "SELECT count(*) AS free FROM (SELECT FROM accounts WHERE user_id = ANY($1::bigint[]) FOR UPDATE SKIP LOCKED) x",
        [payees.slice(0, -1)],
      );
      assert.equal(Number(rows[0]?.free), 0);
      await client.query("ROLLBACK");
      assert.ok((await call).every((r) => r.ok));
    } finally {
      client.release();
      await racer.end();
    }
  });

  it("a single post or void reaches its hold by primary key, not by scanning every held hold", async () => {
    const schema = await openTestSchema(BASE_URL, `user_service_posts_plan_${STAMP}`, {
      application_name: APPLICATION_NAME,
      pool_max: 2,
      migrations: MIGRATIONS,
    });
    try {
      const { pool } = schema;
      await assertSystemAccounts(pool);
      const p = await people(pool, "plan");
      const items = (n: number) =>
        Array.from({ length: n }, (_, i) => ({
          transfer_id: randomUUID(),
          dest_user_id: i % 2 === 0 ? p.a : p.b,
          amount: 1,
        }));
      // Statistics taken at a quiet moment: holds in the table, none of them held. The partial
      // indexes of held holds then look empty to the planner.
      const settled = items(200);
      await funded(pool, p.payer, randomUUID(), settled);
      await pool.query("SELECT ledger_post(t) FROM unnest($1::uuid[]) AS t(t)", [
        settled.map((i) => i.transfer_id),
      ]);
      await pool.query("ANALYZE holds");
      const held = items(1_000);
      await funded(pool, p.payer, randomUUID(), held);
      const read = await withTransaction(pool, async (client) => {
        const step = (op: string, transfer_id: string | undefined) =>
          client.query(
            "SELECT * FROM ledger_apply_batch($1::text[], $2::uuid[], $3::bigint[], $3::bigint[], $3::bigint[])",
            [[op], [transfer_id], [null]],
          );
        await step("post", held[0]?.transfer_id);
        await step("void", held[1]?.transfer_id);
        const { rows } = await client.query<{ n: string }>(
          `SELECT pg_stat_get_xact_tuples_returned('holds_held_by_source'::regclass)
                + pg_stat_get_xact_tuples_returned('holds_held_by_dest'::regclass) AS n`,
        );
        return Number(rows[0]?.n);
      });
      assert.equal(read, 0);
    } finally {
      await schema.drop();
    }
  });

  it("concurrent packs to the same payees in opposite orders, with voids, all finish", async () => {
    assert.ok(current);
    const pool = current.pool;
    const p = await people(pool, "racer");
    // Payees far from 2^53-1, so that every credit fits.
    const payees = [p.a, p.b, p.closed];
    const packs = Array.from({ length: 4 }, () =>
      Array.from({ length: 40 }, (_, i) => ({
        transfer_id: randomUUID(),
        dest_user_id: payees[i % payees.length] ?? p.a,
        amount: 1 + i,
      })),
    );
    for (const pack of packs) await funded(pool, p.payer, randomUUID(), pack);
    const calls = packs.map((pack, k) => {
      const ops: LedgerOperation[] = pack.map((item, i) =>
        i % 10 === k ? voiding(item.transfer_id) : post(item.transfer_id),
      );
      return applyBatch(pool, k % 2 === 0 ? ops : ops.reverse());
    });
    const results = await Promise.all(calls);
    assert.ok(results.flat().every((r) => r.ok));
    assert.deepEqual(await brokenChains(pool), []);
    const report = await audit(pool);
    assert.equal(report.consistent, true, JSON.stringify(report));
  });
});
