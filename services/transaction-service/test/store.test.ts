/**
 * The saga store's batched statements against a real PostgreSQL (TEST_SAGA_DATABASE_URL; skipped
 * when unset), in a fresh schema of its own that is dropped at the end. Concurrent calls share
 * statements here exactly as under load, so these tests pin what batching must not change: one
 * transfer per idempotency key, one winner per compare-and-set, outbox rows only for committed
 * transitions, the first kept answer wins.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { uuidv7 } from "#packages/contracts/ids.ts";
import { createPool, migrate, type Pool } from "#packages/pg/index.ts";
import type { SagaTransfer } from "../src/saga/machine.ts";
import { type NewTransfer, SagaStore } from "../src/saga/store.ts";

const BASE_URL = process.env.TEST_SAGA_DATABASE_URL ?? "";
const SCHEMA = `saga_store_test_${process.pid}_${Date.now()}`;

let admin: Pool;
let pool: Pool;
let store: SagaStore;

function newTransfer(key: string | null = randomUUID()): NewTransfer {
  return {
    id: uuidv7(),
    idempotency_key: key,
    request_fingerprint: "fp",
    source_user_id: 1,
    dest_user_id: 2,
    amount: 100,
    now: new Date().toISOString(),
    step_timeout_ms: 5_000,
  };
}

function heldFrom(transfer: SagaTransfer, source_init_bal: number): SagaTransfer {
  return { ...transfer, state: "held", source_init_bal, updated_at: new Date().toISOString() };
}

const command = (id: string) => ({ topic: "commands", key: id, value: { id } });

async function outboxKeys(): Promise<string[]> {
  const { rows } = await pool.query<{ key: string }>("SELECT key FROM outbox ORDER BY id");
  return rows.map((r) => r.key);
}

describe("saga store on PostgreSQL", {
  skip: BASE_URL === "" ? "TEST_SAGA_DATABASE_URL is not set" : false,
}, () => {
  before(async () => {
    admin = createPool(BASE_URL, { max: 1, application_name: "saga-store-test" });
    await admin.query(`CREATE SCHEMA ${SCHEMA}`);
    const url = new URL(BASE_URL);
    url.searchParams.set("options", `-c search_path=${SCHEMA}`);
    pool = createPool(url.toString(), { max: 10, application_name: "saga-store-test" });
    await migrate(pool, join(import.meta.dirname, "..", "migrations"));
    store = new SagaStore(pool, { write_batch_max: 7, writes_in_flight_max: 2, writes_waiting_max: 1_000 });
  });

  after(async () => {
    await pool?.end();
    await admin?.query(`DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE`);
    await admin?.end();
  });

  it("creates one transfer per idempotency key, however the requests are batched", async () => {
    const shared = randomUUID();
    const inputs = [
      ...Array.from({ length: 40 }, () => newTransfer()),
      ...Array.from({ length: 5 }, () => newTransfer(shared)),
      ...Array.from({ length: 5 }, () => newTransfer(null)),
    ];
    const results = await Promise.all(inputs.map((input) => store.createOrGet(input)));
    for (const [i, result] of results.entries()) {
      if (i < 40 || i >= 45) {
        assert.equal(result.created, true);
        assert.equal(result.transfer.id, inputs[i]?.id);
        assert.equal(result.transfer.state, "created");
      }
    }
    const sharing = results.slice(40, 45);
    assert.equal(sharing.filter((r) => r.created).length, 1, "one request with the key creates");
    assert.equal(new Set(sharing.map((r) => r.transfer.id)).size, 1, "all see the same transfer");
    const { rows } = await pool.query<{ n: string }>(
      "SELECT count(*) AS n FROM transfers WHERE idempotency_key = $1",
      [shared],
    );
    assert.equal(rows[0]?.n, "1");
  });

  it("commits concurrent transitions of many transfers, each with its own outbox row", async () => {
    await pool.query("DELETE FROM outbox");
    const created = await Promise.all(Array.from({ length: 30 }, () => store.createOrGet(newTransfer())));
    const moved = await Promise.all(
      created.map(({ transfer }, i) =>
        store.commitTransition("created", heldFrom(transfer, 1_000 + i), [command(transfer.id)], 1_000, {
          status: 201,
          body: { n: i },
        }),
      ),
    );
    for (const [i, row] of moved.entries()) {
      assert.ok(row !== null);
      assert.equal(row.id, created[i]?.transfer.id);
      assert.equal(row.state, "held");
      assert.equal(row.source_init_bal, 1_000 + i);
      assert.equal(row.response_status, 201);
      assert.deepEqual(row.response_body, { n: i });
    }
    assert.deepEqual((await outboxKeys()).sort(), created.map((c) => c.transfer.id).sort());
  });

  it("lets exactly one of two racing transitions win, and queues only the winner's message", async () => {
    await pool.query("DELETE FROM outbox");
    const { transfer } = await store.createOrGet(newTransfer());
    const failing: SagaTransfer = { ...transfer, state: "failing", failure_reason: "insufficient_funds" };
    const [a, b] = await Promise.all([
      store.commitTransition("created", heldFrom(transfer, 5), [command(transfer.id)], 1_000),
      store.commitTransition("created", failing, [{ ...command(transfer.id), key: "loser" }], 1_000),
    ]);
    assert.ok((a === null) !== (b === null), "exactly one wins");
    const [state, key] = a !== null ? ["held", transfer.id] : ["failing", "loser"];
    assert.equal((a ?? b)?.state, state);
    assert.deepEqual(await outboxKeys(), [key]);
    const stored = await store.get(transfer.id);
    assert.equal(stored?.state, state);
    const stale = await store.commitTransition("created", failing, [command("stale")], 1_000);
    assert.equal(stale, null, "a transition from a state the transfer left is refused");
    assert.deepEqual(await outboxKeys(), [key]);
  });

  it("keeps the first answer given for a request", async () => {
    const { transfer } = await store.createOrGet(newTransfer());
    const held = await store.commitTransition("created", heldFrom(transfer, 5), [], 1_000, {
      status: 201,
      body: { first: true },
    });
    assert.ok(held !== null);
    const recorded = await store.commitTransition("held", { ...held, state: "recorded" }, [], 1_000, {
      status: 201,
      body: { first: false },
    });
    assert.deepEqual(recorded?.response_body, { first: true });
  });

  it("reads several transfers in one call", async () => {
    const made = await Promise.all([1, 2, 3].map(() => store.createOrGet(newTransfer())));
    const ids = made.map((m) => m.transfer.id);
    const found = await store.getMany([...ids, randomUUID()]);
    assert.deepEqual([...found.keys()].sort(), [...ids].sort());
  });
});
