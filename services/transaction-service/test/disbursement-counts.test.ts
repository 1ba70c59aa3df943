/**
 * The batch counts trigger (migrations 004, 008, 014) against a real PostgreSQL
 * (TEST_SAGA_DATABASE_URL; skipped when unset): one statement moving items of several batches
 * updates each batch once, with its own deltas; and its cost stays linear in the statement's rows
 * on a connection whose first statements were small (PL/pgSQL keeps the plans of its first call).
 * saga_public_status, which it reads twice per row, answers as machine.ts and costs no call.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { after, before, describe, it } from "node:test";
import { uuidv7 } from "#packages/contracts/ids.ts";
import type { Pool } from "#packages/pg/index.ts";
import { openTestSchema, type TestSchema } from "#packages/pg/test-schema.ts";
import { DisbursementStore } from "../src/disbursements/store.ts";
import { publicStatus, sagaStates } from "../src/saga/machine.ts";

const BASE_URL = process.env.TEST_SAGA_DATABASE_URL ?? "";
const SCHEMA = `saga_disbursement_counts_test_${process.pid}_${Date.now()}`;
/** A 2,000-row statement takes well under a second; comparing every row with every other took 5 s. */
const STATEMENT_2000_MAX_MS = 2_000;
/** How long a funded item waits for its credit, and a refused one for its record, before the sweep. */
const WAITS = { step_ms: 60_000, record_ms: 60_000 };

let pool: Pool;
let test_schema: TestSchema | undefined;
let store: DisbursementStore;

async function newBatch(amounts: number[]) {
  const items = amounts.map((amount, i) => ({
    transfer_id: uuidv7(),
    dest_user_id: 10 + i,
    amount,
    reference: `r${i}`,
  }));
  const { disbursement } = await store.createOrGet({
    id: uuidv7(),
    idempotency_key: randomUUID(),
    request_fingerprint: "fp",
    source_user_id: 1,
    reference: null,
    items,
    total_amount: amounts.reduce((a, b) => a + b, 0),
    funding_timeout_ms: 5_000,
  });
  const ids = items.map((i) => i.transfer_id);
  return { id: disbursement.id, ids };
}

/** The ledger held every item. */
async function fundAll(batch: { id: string; ids: string[] }) {
  const items = batch.ids.map((transfer_id) => ({
    transfer_id,
    held: true as const,
    source_init_bal: 10_000,
  }));
  assert.equal(await store.applyFunding(batch.id, { refused: null, items }, WAITS, () => []), true);
}

/** One UPDATE statement moving each listed transfer to its state. */
async function moveAtOnce(moves: Array<[id: string, state: string]>) {
  await pool.query(
    `UPDATE transfers t SET state = m.state, updated_at = now()
       FROM unnest($1::uuid[], $2::text[]) AS m(id, state) WHERE t.id = m.id`,
    [moves.map(([id]) => id), moves.map(([, state]) => state)],
  );
}

async function batchRow(id: string) {
  const { rows } = await pool.query(
    `SELECT pending_count, completed_count, failed_count, amount_completed_minor::int AS completed_minor,
            amount_refunded_minor::int AS refunded_minor, version::int AS version
       FROM disbursements WHERE id = $1`,
    [id],
  );
  return rows[0];
}

describe("disbursement counts on PostgreSQL", {
  skip: BASE_URL === "" ? "TEST_SAGA_DATABASE_URL is not set" : false,
}, () => {
  before(async () => {
    test_schema = await openTestSchema(BASE_URL, SCHEMA, {
      application_name: "saga-disbursement-counts-test",
      // One connection: every statement meets the plans the trigger made on its first call.
      pool_max: 1,
      migrations: join(import.meta.dirname, "..", "migrations"),
    });
    ({ pool } = test_schema);
    store = new DisbursementStore(pool);
    await pool.query("CREATE TABLE status_changes (id uuid, old_status text, new_status text)");
    await pool.query(`CREATE OR REPLACE FUNCTION disbursement_status_changed(d disbursements, p_old_status text)
      RETURNS void LANGUAGE sql AS $$
        INSERT INTO status_changes VALUES (d.id, p_old_status, disbursement_status(d))
      $$`);
  });

  after(async () => {
    await test_schema?.drop();
  });

  it("moves 2,000 items in linear time after the connection's first statement moved one item", async () => {
    const small = await newBatch([7]);
    await moveAtOnce([[small.ids[0] as string, "recorded"]]);

    const amounts = Array.from({ length: 1_000 }, (_, i) => 1 + (i % 50));
    const batches = [await newBatch(amounts), await newBatch(amounts)];
    // Every tenth item fails (a refusal), the others funded: one statement, as a funding is.
    const moves = batches.flatMap((b) =>
      b.ids.map((id, i): [string, string] => [id, i % 10 === 0 ? "failing" : "recorded"]),
    );
    const started = performance.now();
    await moveAtOnce(moves);
    const took_ms = performance.now() - started;
    const refunded = amounts.filter((_, i) => i % 10 === 0).reduce((a, b) => a + b, 0);
    for (const b of batches) {
      assert.deepEqual(await batchRow(b.id), {
        pending_count: 900,
        completed_count: 0,
        failed_count: 100,
        completed_minor: 0,
        refunded_minor: refunded,
        version: 2,
      });
    }
    assert.ok(took_ms < STATEMENT_2000_MAX_MS, `moving 2,000 items took ${Math.round(took_ms)} ms`);
  });

  it("one statement over items of two batches: each batch once, with its own deltas", async () => {
    const a = await newBatch([100, 200, 300]);
    const b = await newBatch([1_000, 2_000]);
    await fundAll(a);
    await fundAll(b);
    const [a1, a2, a3] = a.ids as [string, string, string];
    const [b1, b2] = b.ids as [string, string];
    await moveAtOnce([
      [a1, "recorded"],
      [a2, "recorded"],
      [b1, "recorded"],
      [b2, "recorded"],
    ]);
    assert.equal((await batchRow(a.id)).version, 2, "no count moved: no version");
    await moveAtOnce([[a1, "posted"]]);
    // a1 moves inside COMPLETED, a2 completes, a3 fails, b1 completes, b2 stays PENDING.
    await moveAtOnce([
      [a1, "completed"],
      [a2, "posted"],
      [a3, "failing"],
      [b1, "posted"],
      [b2, "refunding"],
    ]);
    assert.deepEqual(await batchRow(a.id), {
      pending_count: 0,
      completed_count: 2,
      failed_count: 1,
      completed_minor: 300,
      refunded_minor: 300,
      version: 4,
    });
    assert.deepEqual(await batchRow(b.id), {
      pending_count: 1,
      completed_count: 1,
      failed_count: 0,
      completed_minor: 1_000,
      refunded_minor: 0,
      version: 3,
    });
    const records = await pool.query(
      "SELECT key, (payload->'snapshot'->>'version')::int AS v FROM outbox WHERE topic = '@commands' ORDER BY id",
    );
    const versionsOf = (id: string) => records.rows.filter((r) => r.key === id).map((r) => r.v);
    assert.deepEqual(versionsOf(a.id), [1, 2, 3, 4], "one record per visible change");
    assert.deepEqual(versionsOf(b.id), [1, 2, 3]);
    const changes = await pool.query(
      "SELECT id, old_status, new_status FROM status_changes WHERE id = ANY ($1)",
      [[a.id, b.id]],
    );
    assert.deepEqual(changes.rows, [{ id: a.id, old_status: "PENDING", new_status: "PARTIALLY_COMPLETED" }]);
  });

  it("saga_public_status answers as publicStatus for every state, NULL for NULL, inlined into its caller", async () => {
    const { rows } = await pool.query<{ state: string | null; status: string | null }>(
      "SELECT s AS state, saga_public_status(s) AS status FROM unnest($1::text[]) AS s",
      [[...sagaStates, null]],
    );
    assert.deepEqual(rows, [
      ...sagaStates.map((state) => ({ state, status: publicStatus(state) })),
      { state: null, status: null },
    ]);
    const plan = await pool.query<{ "QUERY PLAN": string }>(
      "EXPLAIN (VERBOSE, COSTS OFF) SELECT saga_public_status(state) FROM transfers",
    );
    const text = plan.rows.map((r) => r["QUERY PLAN"]).join("\n");
    assert.doesNotMatch(text, /saga_public_status/, `a call per row, not a CASE:\n${text}`);
  });
});
