/**
 * A broken invariant parks its transfer (real saga PostgreSQL: TEST_SAGA_DATABASE_URL; skipped
 * when unset), in a fresh schema of its own: the sweep parks a transfer whose ledger answer
 * breaks an invariant instead of retrying it, never claims it again, still retries an ordinary
 * failure, and an operator's re-drive returns the transfer to the state it was parked from.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { uuidv7 } from "#packages/contracts/ids.ts";
import { topicNames } from "#packages/contracts/messages.ts";
import { createLogger } from "#packages/log/index.ts";
import type { Pool } from "#packages/pg/index.ts";
import { openTestSchema, type TestSchema } from "#packages/pg/test-schema.ts";
import { LedgerInvariantError } from "../src/saga/ledger-client.ts";
import { type LedgerPort, SagaRunner } from "../src/saga/runner.ts";
import { SagaStore } from "../src/saga/store.ts";
import { startSweeper } from "../src/saga/sweeper.ts";

const BASE_URL = process.env.TEST_SAGA_DATABASE_URL ?? "";
const SCHEMA = `saga_parking_test_${process.pid}_${Date.now()}`;
const BACKOFF = { step_base_ms: 1, step_cap_ms: 1, resend_base_ms: 1, resend_cap_ms: 1 };

let pool: Pool;
let test_schema: TestSchema | undefined;
let store: SagaStore;

/** A ledger whose every step answers with `failure` (a broken invariant, or an outage). */
function failingLedger(failure: () => Error): LedgerPort {
  return {
    transfer: async () => {
      throw failure();
    },
    post: async () => {
      throw failure();
    },
    void: async () => {
      throw failure();
    },
  };
}

async function createDue(): Promise<string> {
  const { transfer } = await store.createOrGet({
    id: uuidv7(),
    idempotency_key: randomUUID(),
    request_fingerprint: "fp",
    source_user_id: 1,
    dest_user_id: 2,
    amount: 100,
    step_timeout_ms: 0,
  });
  return transfer.id;
}

async function row(id: string) {
  const { rows } = await pool.query<{
    state: string;
    parked_from: string | null;
    parked_reason: string | null;
    attempts: number;
  }>("SELECT state, parked_from, parked_reason, attempts FROM transfers WHERE id = $1", [id]);
  return rows[0];
}

/** Run the sweep with `ledger` until `done` holds (or wait_ms pass), then stop it. */
async function sweepUntil(ledger: LedgerPort, done: () => Promise<boolean>, wait_ms = 10_000): Promise<void> {
  const logger = createLogger("parking-test", "silent");
  const runner = new SagaRunner(store, ledger, topicNames("test."), logger, {
    step_timeout_ms: 1,
    record_resend_ms: 1_000,
  });
  const sweeper = startSweeper({
    store,
    runner,
    logger,
    interval_ms: 20,
    batch_max: 100,
    concurrency: 4,
    backoff_base_ms: 1,
    backoff_cap_ms: 1,
    resend_base_ms: 1_000,
    resend_cap_ms: 1_000,
  });
  try {
    const deadline = Date.now() + wait_ms;
    while (!(await done()) && Date.now() < deadline) await sleep(20);
  } finally {
    await sweeper.stop();
  }
}

describe("parking a transfer whose step breaks an invariant", {
  skip: BASE_URL === "" ? "TEST_SAGA_DATABASE_URL is not set" : false,
}, () => {
  before(async () => {
    test_schema = await openTestSchema(BASE_URL, SCHEMA, {
      application_name: "saga-parking-test",
      pool_max: 10,
      migrations: join(import.meta.dirname, "..", "migrations"),
    });
    ({ pool } = test_schema);
    store = new SagaStore(pool);
  });

  after(async () => {
    await test_schema?.drop();
  });

  it("parks the transfer with its reason, and the sweep never picks it again", async () => {
    await pool.query("DELETE FROM transfers");
    const id = await createDue();
    let steps = 0;
    const breaking = failingLedger(() => {
      steps += 1;
      return new LedgerInvariantError("transfer answered hold_mismatch");
    });
    await sweepUntil(breaking, async () => (await row(id))?.state === "parked");
    const parked = await row(id);
    assert.equal(parked?.state, "parked", "a broken invariant parks the transfer");
    assert.equal(parked?.parked_from, "created");
    assert.match(parked?.parked_reason ?? "", /hold_mismatch/);
    assert.equal(steps, 1, "the breach was not retried");
    // Due or not, a parked transfer is never claimed.
    await pool.query("UPDATE transfers SET next_attempt_at = now() - interval '1 hour' WHERE id = $1", [id]);
    assert.deepEqual(
      (await store.claimDue(100, BACKOFF)).map((t) => t.id),
      [],
    );
    await sweepUntil(breaking, async () => false, 500);
    assert.equal(steps, 1, "the sweep left the parked transfer alone");
  });

  it("retries an ordinary failure (an outage) instead of parking it", async () => {
    await pool.query("DELETE FROM transfers");
    const id = await createDue();
    await sweepUntil(
      failingLedger(() => new Error("ledger batch timed out")),
      async () => {
        return ((await row(id))?.attempts ?? 0) >= 3;
      },
    );
    const retried = await row(id);
    assert.equal(retried?.state, "created");
    assert.ok((retried?.attempts ?? 0) >= 3, "the sweep kept retrying");
  });

  it("an operator's re-drive returns a parked transfer to the state it was parked from", async () => {
    await pool.query("DELETE FROM transfers");
    const id = await createDue();
    assert.equal((await store.park(id, "created", "test breach"))?.state, "parked");
    assert.equal(await store.park(id, "created", "again"), null, "parking is a compare-and-set");
    const redriven = await store.redrive(id);
    assert.equal(redriven?.parked, true);
    assert.equal(redriven?.transfer.state, "created");
    const back = await row(id);
    assert.equal(back?.parked_from, null);
    assert.equal(back?.parked_reason, null);
    assert.deepEqual(
      (await store.claimDue(100, BACKOFF)).map((t) => t.id),
      [id],
      "a re-driven transfer is due at once",
    );
    const again = await store.redrive(id);
    assert.equal(again?.parked, false, "a transfer that is not parked is left as it is");
    assert.equal(again?.transfer.state, "created");
    assert.equal(await store.redrive(uuidv7()), null);
  });

  it("the database refuses a parked transfer without its origin, or from a decided state", async () => {
    await pool.query("DELETE FROM transfers");
    const id = await createDue();
    await assert.rejects(pool.query("UPDATE transfers SET state = 'parked' WHERE id = $1", [id]), /check/);
    await assert.rejects(
      pool.query(
        "UPDATE transfers SET state = 'parked', parked_from = 'posted', parked_reason = 'x' WHERE id = $1",
        [id],
      ),
      /check/,
    );
  });
});
