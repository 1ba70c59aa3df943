/**
 * The transfer steps of one ledger_apply_batch call made in one pass
 * (migrations/009_set_based_transfers.sql) against a real PostgreSQL (TEST_LEDGER_DATABASE_URL;
 * skipped when unset): the same calls run on a schema migrated up to 008 (every transfer its own
 * ledger_transfer) and on the current one, and every answer, balance, bound, hold and journal line
 * must come out the same; and the one pass is taken exactly when it cannot differ.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import type { LedgerOperation } from "#packages/contracts/ledger.ts";
import type { Pool } from "#packages/pg/index.ts";
import type { TestSchema } from "#packages/pg/test-schema.ts";
import { audit } from "../src/ledger/audit.ts";
import { applyBatch } from "../src/ledger/steps.ts";
import { createUser } from "../src/ledger/users.ts";
import { answerOf, brokenChains, codesOf, dump, idsOf, openComparison } from "./ledger-compare.ts";

const BASE_URL = process.env.TEST_LEDGER_DATABASE_URL ?? "";
const STAMP = `${process.pid}_${Date.now()}`;
const MAX = Number.MAX_SAFE_INTEGER;
const APPLICATION_NAME = "user-service-transfers-test";

let current: TestSchema | undefined;
let baseline: TestSchema | undefined;

type Move = [transfer_id: string, source_user_id: number, dest_user_id: number, amount: number];

const transfer = ([transfer_id, source_user_id, dest_user_id, amount]: Move) =>
  ({ op: "transfer", transfer_id, source_user_id, dest_user_id, amount }) as const satisfies LedgerOperation;

/** Users made in one order, so that both schemas give them the same ids. */
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
    a: await user(1_000),
    b: await user(500),
    c: await user(0),
    d: await user(10),
    closed: await user(100),
    ceiling: await user(MAX - 250),
  };
}

type People = Awaited<ReturnType<typeof people>>;

/**
 * Runs of transfers: a plain one (one pass), and each case that must go step by step, padded to
 * the six steps from which a run is checked for the one pass at all.
 */
function moves(p: People, ids: string[]): Record<string, Move[]> {
  const id = (i: number) => ids[i] ?? "";
  let next = 18;
  const padded = (run: Move[]): Move[] => [
    ...run,
    ...Array.from(
      { length: 6 - run.length },
      (_, i): Move => [id(next++), i % 2 ? p.b : p.a, i % 2 ? p.a : p.b, 1],
    ),
  ];
  const runs: Record<string, Move[]> = {
    // Wallets paying and paid in one run, twice the same pair, an input order that is not the lock order.
    plain: [
      [id(0), p.b, p.c, 50],
      [id(1), p.a, p.b, 100],
      [id(2), p.d, p.a, 5],
      [id(3), p.b, p.a, 30],
      [id(4), p.a, p.c, 70],
      [id(5), p.a, p.b, 1],
      [id(6), p.a, p.d, 1],
    ],
    // c (120 by now) pays out of what the run credits it first (b sorts before c): only step by
    // step is it covered.
    credited_first: [
      [id(7), p.c, p.d, 150],
      [id(8), p.b, p.c, 40],
      [id(9), p.a, p.b, 3],
    ],
    short: [
      [id(10), p.d, p.a, 500],
      [id(11), p.a, p.b, 2],
    ],
    // A copy of a transfer already applied, beside a new one.
    copies: [
      [id(1), p.a, p.b, 100],
      [id(12), p.b, p.a, 4],
    ],
    refusals: [
      [id(13), p.a, p.a, 1],
      [id(14), p.a, 987_654_321, 1],
      [id(15), p.a, p.closed, 1],
      [id(16), p.b, p.ceiling, 300],
      [id(17), p.a, p.b, 6],
    ],
  };
  for (const name of ["credited_first", "short", "copies", "refusals"]) runs[name] = padded(runs[name] ?? []);
  return runs;
}

/** Runs every scenario on one schema and answers its answers and its ledger. */
async function runAll(pool: Pool, ids: string[]) {
  const p = await people(pool, "mover");
  const runs = moves(p, ids);
  const answers: Record<string, string[]> = {};
  const full: Record<string, unknown[]> = {};
  for (const [name, run] of Object.entries(runs)) {
    if (name === "refusals")
      await pool.query("UPDATE users SET deleted_at = now() WHERE id = $1", [p.closed]);
    const results = await applyBatch(pool, run.map(transfer));
    answers[name] = codesOf(results);
    full[name] = results.map(answerOf);
  }
  // Transfers beside holds and voids in one call: each kind's runs end where another kind's step is.
  const [h1, h2, t1, t2, t3] = ids.slice(30);
  const mixed: LedgerOperation[] = [
    transfer([t1 ?? "", p.a, p.b, 7]),
    { op: "hold", transfer_id: h1 ?? "", source_user_id: p.b, dest_user_id: p.c, amount: 8 },
    transfer([t2 ?? "", p.b, p.a, 9]),
    transfer([t3 ?? "", p.c, p.a, 1]),
    { op: "hold", transfer_id: h2 ?? "", source_user_id: p.a, dest_user_id: p.c, amount: 2 },
  ];
  const mixed_results = await applyBatch(pool, mixed);
  answers.mixed = codesOf(mixed_results);
  return {
    p,
    answers,
    full,
    ledger: await dump(pool),
    report: await audit(pool),
    chains: await brokenChains(pool),
  };
}

/** Whether the current schema would take the one pass for these steps (its wallets unlocked: a read only). */
async function isPlain(pool: Pool, run: Move[]): Promise<boolean> {
  const { rows } = await pool.query<{ plain: boolean }>(
    "SELECT ledger_transfer_run_is_plain($1::uuid[], $2::bigint[], $3::bigint[], $4::bigint[]) AS plain",
    [run.map((m) => m[0]), run.map((m) => m[1]), run.map((m) => m[2]), run.map((m) => m[3])],
  );
  return rows[0]?.plain === true;
}

describe("set-based transfers on PostgreSQL", {
  skip: BASE_URL === "" ? "TEST_LEDGER_DATABASE_URL is not set" : false,
}, () => {
  before(async () => {
    // The ledger as it was before 009: every transfer its own ledger_transfer.
    ({ current, baseline } = await openComparison(
      BASE_URL,
      `user_service_transfers_${STAMP}`,
      8,
      APPLICATION_NAME,
    ));
  });

  after(async () => {
    await current?.drop();
    await baseline?.drop();
  });

  it("answers, balances, bounds, holds and journal are those of one ledger_transfer per step", async () => {
    assert.ok(current && baseline);
    const ids = idsOf(35);
    const now = await runAll(current.pool, ids);
    const then = await runAll(baseline.pool, ids);

    assert.deepEqual(now.answers, {
      plain: Array(7).fill("ok:posted"),
      credited_first: Array(6).fill("ok:posted"),
      short: ["insufficient_funds", ...Array(5).fill("ok:posted")],
      copies: Array(6).fill("ok:posted"),
      refusals: [
        "same_wallet",
        "dest_not_found",
        "dest_not_found",
        "dest_unavailable",
        "ok:posted",
        "ok:posted",
      ],
      mixed: ["ok:posted", "ok:held", "ok:posted", "ok:posted", "ok:held"],
    });
    assert.deepEqual(now.full, then.full);
    assert.deepEqual(now.answers, then.answers);
    assert.deepEqual(now.ledger, then.ledger);
    assert.deepEqual(now.chains, []);
    assert.equal(now.report.consistent, true, JSON.stringify(now.report));
    assert.deepEqual(now.report, then.report);
  });

  it("takes the one pass only when no step can be refused or be a copy", async () => {
    assert.ok(current);
    const pool = current.pool;
    const p = await people(pool, "plainness");
    const fresh = (source: number, dest: number, amount: number): Move => [
      randomUUID(),
      source,
      dest,
      amount,
    ];
    const plain = [
      fresh(p.a, p.b, 600),
      fresh(p.b, p.c, 500),
      fresh(p.a, p.b, 100),
      fresh(p.a, p.ceiling, 241),
    ];
    assert.equal(await isPlain(pool, plain), true);
    // Each of these alone makes the run go step by step.
    const applied = fresh(p.a, p.b, 1);
    await applyBatch(pool, [transfer(applied)]);
    const refused = fresh(p.c, p.a, 1);
    assert.deepEqual(codesOf(await applyBatch(pool, [transfer(refused)])), ["insufficient_funds"]);
    await pool.query("UPDATE users SET deleted_at = now() WHERE id = $1", [p.closed]);
    const cases: Record<string, Move> = {
      "a transfer already applied": applied,
      "a transfer already refused": refused,
      "the payer as payee": fresh(p.a, p.a, 1),
      "a payee without a wallet": fresh(p.a, 987_654_321, 1),
      "a closed payee": fresh(p.a, p.closed, 1),
      "a closed payer": fresh(p.closed, p.a, 1),
      "a payer short of the run's debits": fresh(p.a, p.c, 100),
      "a payee without room for the run's credits": fresh(p.d, p.ceiling, 10),
    };
    for (const [name, move] of Object.entries(cases)) {
      assert.equal(await isPlain(pool, [...plain, move]), false, name);
    }
  });
});
