/**
 * The disbursement store against a real PostgreSQL (TEST_SAGA_DATABASE_URL; skipped when unset):
 * counts kept in the items' transition statements, and disbursement_status_changed() called in
 * the commit that makes a batch final, once.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { uuidv7 } from "#packages/contracts/ids.ts";
import type { Pool } from "#packages/pg/index.ts";
import { openTestSchema, type TestSchema } from "#packages/pg/test-schema.ts";
import { DisbursementStore } from "../src/disbursements/store.ts";
import { SagaStore } from "../src/saga/store.ts";

const BASE_URL = process.env.TEST_SAGA_DATABASE_URL ?? "";
const SCHEMA = `saga_disbursement_test_${process.pid}_${Date.now()}`;
/** How long a funded item waits for its credit, and a refused one for its record, before the sweep. */
const WAITS = { step_ms: 60_000, record_ms: 60_000 };

let pool: Pool;
let test_schema: TestSchema | undefined;
let store: DisbursementStore;
let saga: SagaStore;

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
  return { disbursement, items };
}

describe("disbursement store on PostgreSQL", {
  skip: BASE_URL === "" ? "TEST_SAGA_DATABASE_URL is not set" : false,
}, () => {
  before(async () => {
    test_schema = await openTestSchema(BASE_URL, SCHEMA, {
      application_name: "saga-disbursement-test",
      pool_max: 5,
      migrations: join(import.meta.dirname, "..", "migrations"),
    });
    ({ pool } = test_schema);
    store = new DisbursementStore(pool);
    saga = new SagaStore(pool);
    // The hook, observed: each call logged.
    await pool.query("CREATE TABLE status_changes (id uuid, old_status text, new_status text)");
    await pool.query(`CREATE OR REPLACE FUNCTION disbursement_status_changed(d disbursements, p_old_status text)
      RETURNS void LANGUAGE sql AS $$
        INSERT INTO status_changes VALUES (d.id, p_old_status, disbursement_status(d))
      $$`);
  });

  after(async () => {
    await test_schema?.drop();
  });

  it("keeps counts and amounts as items move, and calls the hook once, in the commit that makes it final", async () => {
    const { disbursement, items } = await newBatch([100, 200, 300]);
    assert.deepEqual(disbursement.counts, { pending: 3, completed: 0, failed: 0 });
    const [a, b, c] = items.map((i) => i.transfer_id) as [string, string, string];
    const applied = await store.applyFunding(
      disbursement.id,
      {
        refused: null,
        items: [
          { transfer_id: a, held: true, source_init_bal: 1_000 },
          { transfer_id: b, held: true, source_init_bal: 900 },
          { transfer_id: c, held: false, reason: "dest_not_found" },
        ],
      },
      WAITS,
      (rows) => rows.map((r) => ({ topic: "commands", key: r.id, value: { id: r.id, state: r.state } })),
    );
    assert.equal(applied, true);
    const outbox = await pool.query("SELECT count(*)::int AS n FROM outbox WHERE topic = 'commands'");
    assert.equal(outbox.rows[0].n, 1, "the refused item's FAILED record is queued with the funding");
    // The batch's own record: at its creation, its funding, and the counts the funding moved.
    const versions = await pool.query(
      "SELECT (payload->'snapshot'->>'version')::int AS v FROM outbox WHERE topic = '@commands' AND key = $1 ORDER BY id",
      [disbursement.id],
    );
    assert.deepEqual(
      versions.rows.map((r) => r.v),
      [1, 2, 3],
    );
    let d = await store.get(disbursement.id);
    assert.deepEqual(d?.counts, { pending: 2, completed: 0, failed: 1 });
    assert.equal(d?.amount_refunded, 300);
    assert.equal(d?.status, "PENDING");
    // A second application (another driver) changes nothing.
    assert.equal(
      await store.applyFunding(disbursement.id, { refused: null, items: [] }, WAITS, () => []),
      false,
    );

    // Items move through the saga's own batched transitions.
    const rows = await saga.getMany([a, b]);
    const row = (id: string) => rows.get(id) as NonNullable<ReturnType<typeof rows.get>>;
    assert.equal(row(a).state, "recorded", "a funded item is debited, its credit next");
    assert.equal(row(b).state, "recorded");
    await saga.commitTransition("recorded", { ...row(a), state: "posted", dest_init_bal: 0 }, [], 1_000);
    d = await store.get(disbursement.id);
    assert.deepEqual(d?.counts, { pending: 1, completed: 1, failed: 1 });
    assert.equal(d?.amount_completed, 100);
    assert.equal((await pool.query("SELECT * FROM status_changes")).rowCount, 0, "not final yet");

    await saga.commitTransition("recorded", { ...row(b), state: "posted", dest_init_bal: 0 }, [], 1_000);
    d = await store.get(disbursement.id);
    assert.equal(d?.status, "PARTIALLY_COMPLETED");
    assert.deepEqual(d?.counts, { pending: 0, completed: 2, failed: 1 });
    assert.equal(d?.amount_completed, 300);
    // posted -> completed changes no public status: no second call.
    await saga.commitTransition("posted", { ...row(b), state: "completed", dest_init_bal: 0 }, [], 1_000);
    const changes = await pool.query("SELECT id, old_status, new_status FROM status_changes");
    assert.deepEqual(changes.rows, [
      { id: disbursement.id, old_status: "PENDING", new_status: "PARTIALLY_COMPLETED" },
    ]);
  });

  it("a refused batch: every item FAILED with the refusal, its record queued, the batch FAILED", async () => {
    const { disbursement, items } = await newBatch([5, 6]);
    await store.applyFunding(
      disbursement.id,
      {
        refused: "insufficient_funds",
        items: items.map((i) => ({ transfer_id: i.transfer_id, held: false, reason: "insufficient_funds" })),
      },
      WAITS,
      (rows) => rows.map((r) => ({ topic: "commands", key: r.id, value: { id: r.id } })),
    );
    const d = await store.get(disbursement.id);
    assert.equal(d?.state, "refused");
    assert.equal(d?.status, "FAILED");
    assert.deepEqual(d?.counts, { pending: 0, completed: 0, failed: 2 });
    const rows = await saga.getMany(items.map((i) => i.transfer_id));
    assert.ok(
      [...rows.values()].every((r) => r.state === "failing" && r.failure_reason === "insufficient_funds"),
    );
  });
});
