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
import { after, before, describe, it, mock } from "node:test";
import { uuidv7 } from "#packages/contracts/ids.ts";
import { topicNames } from "#packages/contracts/messages.ts";
import { createLogger } from "#packages/log/index.ts";
import type { Pool } from "#packages/pg/index.ts";
import { openTestSchema, type TestSchema } from "#packages/pg/test-schema.ts";
import type { SagaTransfer } from "../src/saga/machine.ts";
import type { LedgerPort } from "../src/saga/runner.ts";
import { SagaRunner } from "../src/saga/runner.ts";
import { type NewTransfer, SagaStore, TransferOutcomeUnknownError } from "../src/saga/store.ts";

const BASE_URL = process.env.TEST_SAGA_DATABASE_URL ?? "";
const SCHEMA = `saga_store_test_${process.pid}_${Date.now()}`;

let pool: Pool;
let test_schema: TestSchema | undefined;
let store: SagaStore;

function newTransfer(key: string | null = randomUUID()): NewTransfer {
  return {
    id: uuidv7(),
    idempotency_key: key,
    request_fingerprint: "fp",
    source_user_id: 1,
    dest_user_id: 2,
    amount: 100,
    step_timeout_ms: 5_000,
  };
}

function debitedFrom(transfer: SagaTransfer, source_init_bal: number): SagaTransfer {
  return { ...transfer, state: "recorded", source_init_bal, updated_at: new Date().toISOString() };
}

const command = (id: string) => ({ topic: "commands", key: id, value: { id } });

const SKEW_MS = 10 * 60_000;
const BACKOFF = { step_base_ms: 1_000, step_cap_ms: 1_000, resend_base_ms: 1_000, resend_cap_ms: 1_000 };

/** Runs `work` with this process's Date (Date.now, new Date()) shifted by skew_ms, PostgreSQL's clock untouched. */
async function withSkewedClock<T>(skew_ms: number, work: () => Promise<T>): Promise<T> {
  mock.timers.enable({ apis: ["Date"], now: Date.now() + skew_ms });
  try {
    return await work();
  } finally {
    mock.timers.reset();
  }
}

/** A ledger that agrees to everything. */
const agreeingLedger: LedgerPort = {
  transfer: async () => ({ kind: "ok", source_balance_before: 1_000, dest_balance_before: 0 }),
  post: async () => ({ kind: "ok", source_balance_before: 1_000, dest_balance_before: 0 }),
  void: async () => ({ kind: "ok", source_balance_before: 1_000, dest_balance_before: null }),
};

/**
 * The pool, except that statements matching `fails` run (and commit) and then throw, as when the
 * connection drops after COMMIT was sent; and, while `reads_fail`, every other statement throws.
 */
function faultyPool(fails: RegExp, state: { reads_fail: boolean }): Pool {
  const query = async (text: string, values?: unknown[]) => {
    if (fails.test(text)) {
      await pool.query(text, values);
      throw new Error("Connection terminated unexpectedly");
    }
    if (state.reads_fail) throw new Error("connect ECONNREFUSED");
    return pool.query(text, values);
  };
  return new Proxy(pool, { get: (target, name) => (name === "query" ? query : Reflect.get(target, name)) });
}

async function outboxKeys(): Promise<string[]> {
  const { rows } = await pool.query<{ key: string }>("SELECT key FROM outbox ORDER BY id");
  return rows.map((r) => r.key);
}

describe("saga store on PostgreSQL", {
  skip: BASE_URL === "" ? "TEST_SAGA_DATABASE_URL is not set" : false,
}, () => {
  before(async () => {
    test_schema = await openTestSchema(BASE_URL, SCHEMA, {
      application_name: "saga-store-test",
      pool_max: 10,
      migrations: join(import.meta.dirname, "..", "migrations"),
    });
    ({ pool } = test_schema);
    store = new SagaStore(pool, { write_batch_max: 7, writes_in_flight_max: 2, writes_waiting_max: 1_000 });
  });

  after(async () => {
    await test_schema?.drop();
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
        store.commitTransition("created", debitedFrom(transfer, 1_000 + i), [command(transfer.id)], 1_000, {
          status: 201,
          body: { n: i },
        }),
      ),
    );
    for (const [i, row] of moved.entries()) {
      assert.ok(row !== null);
      assert.equal(row.id, created[i]?.transfer.id);
      assert.equal(row.state, "recorded");
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
      store.commitTransition("created", debitedFrom(transfer, 5), [command(transfer.id)], 1_000),
      store.commitTransition("created", failing, [{ ...command(transfer.id), key: "loser" }], 1_000),
    ]);
    assert.ok((a === null) !== (b === null), "exactly one wins");
    const [state, key] = a !== null ? ["recorded", transfer.id] : ["failing", "loser"];
    assert.equal((a ?? b)?.state, state);
    assert.deepEqual(await outboxKeys(), [key]);
    const stored = await store.get(transfer.id);
    assert.equal(stored?.state, state);
    const stale = await store.commitTransition("created", failing, [command("stale")], 1_000);
    assert.equal(stale, null, "a transition from a state the transfer left is refused");
    assert.deepEqual(await outboxKeys(), [key]);
  });

  it("wakes the webhook dispatcher only for a transition that enqueued a delivery", async () => {
    let wakes = 0;
    store.onWebhooks = () => {
      wakes += 1;
    };
    try {
      const fail = async () => {
        const { transfer } = await store.createOrGet({
          ...newTransfer(),
          source_user_id: 901,
          dest_user_id: 902,
        });
        const failing: SagaTransfer = { ...transfer, state: "failing", failure_reason: "insufficient_funds" };
        assert.ok((await store.commitTransition("created", failing, [], 1_000)) !== null);
      };
      await fail();
      assert.equal(wakes, 0, "a final status nobody subscribed to wakes nothing");
      await pool.query(
        `INSERT INTO webhook_endpoints (id, owner_user_id, url, events, secret)
         VALUES ($1, 902, 'https://example.test/hook', ARRAY['transfer.failed'], $2)`,
        [randomUUID(), `whsec_${Buffer.alloc(24, 7).toString("base64")}`],
      );
      await fail();
      assert.equal(wakes, 1, "a delivery enqueued wakes the dispatcher");
    } finally {
      store.onWebhooks = () => {};
      await pool.query("DELETE FROM webhook_endpoints WHERE owner_user_id = 902");
    }
  });

  it("keeps the first answer given for a request", async () => {
    const { transfer } = await store.createOrGet(newTransfer());
    const debited = await store.commitTransition("created", debitedFrom(transfer, 5), [], 1_000, {
      status: 201,
      body: { first: true },
    });
    assert.ok(debited !== null);
    const posted = await store.commitTransition(
      "recorded",
      { ...debited, state: "posted", dest_init_bal: 0 },
      [],
      1_000,
      { status: 201, body: { first: false } },
    );
    assert.deepEqual(posted?.response_body, { first: true });
  });

  it("reads several transfers in one call", async () => {
    const made = await Promise.all([1, 2, 3].map(() => store.createOrGet(newTransfer())));
    const ids = made.map((m) => m.transfer.id);
    const found = await store.getMany([...ids, randomUUID()]);
    assert.deepEqual([...found.keys()].sort(), [...ids].sort());
  });

  it("a fresh transfer is due after its step timeout on PostgreSQL's clock, whatever the service's says", async () => {
    for (const skew_ms of [-SKEW_MS, SKEW_MS]) {
      const { transfer } = await withSkewedClock(skew_ms, () => store.createOrGet(newTransfer()));
      const { rows } = await pool.query<{ due_in_s: number; age_s: number }>(
        `SELECT extract(epoch FROM next_attempt_at - now()) AS due_in_s,
                extract(epoch FROM now() - created_at) AS age_s FROM transfers WHERE id = $1`,
        [transfer.id],
      );
      const due_in_s = Number(rows[0]?.due_in_s);
      assert.ok(due_in_s > 3 && due_in_s <= 5, `due in ${due_in_s} s with the clock ${skew_ms} ms off`);
      assert.ok(Math.abs(Number(rows[0]?.age_s)) < 5, `created ${rows[0]?.age_s} s ago`);
      const claimed = await store.claimDue(1_000, BACKOFF);
      assert.ok(!claimed.some((t) => t.id === transfer.id), "a fresh transfer was re-driven at once");
    }
  });

  it("a transfer an earlier version left waiting in held for its PENDING record is credited by the sweep", async () => {
    const runner = new SagaRunner(
      store,
      agreeingLedger,
      topicNames("test."),
      createLogger("store-test", "silent"),
      { step_timeout_ms: 1_000, record_resend_ms: 1_000 },
    );
    const { transfer } = await store.createOrGet(newTransfer());
    await pool.query(
      `UPDATE transfers SET state = 'held', source_init_bal = 1000, next_attempt_at = now() - interval '1 second'
        WHERE id = $1`,
      [transfer.id],
    );
    const claimed = (await store.claimDue(1_000, BACKOFF)).find((t) => t.id === transfer.id);
    assert.ok(claimed !== undefined, "the held transfer is due");
    await runner.recover(claimed);
    const after = await store.get(transfer.id);
    assert.equal(after?.state, "posted");
    assert.equal(after?.dest_init_bal, 0);
    const queued = await pool.query<{ status: string }>(
      "SELECT payload->'snapshot'->>'status' AS status FROM outbox WHERE key = $1",
      [transfer.id],
    );
    assert.deepEqual(
      queued.rows.map((r) => r.status).sort(),
      ["COMPLETED", "PENDING"],
      "a late credit is listed PENDING meanwhile; its COMPLETED record is queued with the credit",
    );
  });

  it("an insert that fails after its commit still tells every request of the batch its own outcome", async () => {
    const faulty = new SagaStore(faultyPool(/INSERT INTO transfers/, { reads_fail: false }), {
      write_batch_max: 10,
      writes_in_flight_max: 1,
      writes_waiting_max: 100,
    });
    const existing = await store.createOrGet(newTransfer());
    const inputs = [
      newTransfer(null),
      newTransfer(null),
      newTransfer(),
      { ...newTransfer(), idempotency_key: existing.transfer.idempotency_key },
    ];
    const results = await Promise.all(inputs.map((input) => faulty.createOrGet(input)));
    for (const [i, result] of results.slice(0, 3).entries()) {
      assert.equal(result.created, true);
      assert.equal(result.transfer.id, inputs[i]?.id);
      assert.equal(result.transfer.state, "created");
    }
    assert.equal(results[3]?.created, false);
    assert.equal(results[3]?.transfer.id, existing.transfer.id);
    const { rows } = await pool.query<{ n: string }>(
      "SELECT count(*) AS n FROM transfers WHERE id = ANY($1::uuid[])",
      [inputs.map((i) => i.id)],
    );
    assert.equal(rows[0]?.n, "3", "each request's transfer exists once; the replay made none");
  });

  it("when a failed insert cannot be read back, a keyless request learns its transfer may exist", async () => {
    const state = { reads_fail: true };
    const faulty = new SagaStore(faultyPool(/INSERT INTO transfers/, state), {
      write_batch_max: 10,
      writes_in_flight_max: 1,
      writes_waiting_max: 100,
    });
    const keyless = newTransfer(null);
    await assert.rejects(faulty.createOrGet(keyless), (error: unknown) => {
      assert.ok(error instanceof TransferOutcomeUnknownError, String(error));
      assert.equal(error.transfer_id, keyless.id);
      return true;
    });
    assert.equal((await store.get(keyless.id))?.state, "created", "it did commit");
    // With a key, a retry is safe (the key finds the transfer): the plain error is the answer.
    const keyed = newTransfer();
    await assert.rejects(
      faulty.createOrGet(keyed),
      (error: unknown) => !(error instanceof TransferOutcomeUnknownError),
    );
    state.reads_fail = false;
    const retried = await store.createOrGet({ ...newTransfer(), idempotency_key: keyed.idempotency_key });
    assert.equal(retried.created, false);
    assert.equal(retried.transfer.id, keyed.id);
  });

  it("a transition that fails after its commit is answered as committed, with its message queued once", async () => {
    await pool.query("DELETE FROM outbox");
    const faulty = new SagaStore(faultyPool(/WITH moved AS/, { reads_fail: false }));
    const { transfer } = await store.createOrGet(newTransfer());
    const moved = await faulty.commitTransition(
      "created",
      debitedFrom(transfer, 7),
      [command(transfer.id)],
      1_000,
    );
    assert.equal(moved?.state, "recorded");
    assert.equal(moved?.source_init_bal, 7);
    assert.deepEqual(await outboxKeys(), [transfer.id]);
    // The same failure on a compare-and-set that another actor won answers null, as a lost race.
    const posted = await store.commitTransition(
      "recorded",
      { ...(moved as SagaTransfer), state: "posted", dest_init_bal: 0 },
      [],
      1_000,
    );
    assert.equal(posted?.state, "posted");
    const refunding: SagaTransfer = {
      ...(moved as SagaTransfer),
      state: "refunding",
      failure_reason: "dest_unavailable",
    };
    assert.equal(await faulty.commitTransition("recorded", refunding, [command("late")], 1_000), null);
    assert.deepEqual(await outboxKeys(), [transfer.id]);
  });

  it("a record's snapshot carries the transition's time on PostgreSQL's clock", async () => {
    await pool.query("DELETE FROM outbox");
    const { transfer } = await store.createOrGet(newTransfer());
    const snapshot = {
      id: transfer.id,
      created_at: transfer.created_at,
      updated_at: "2000-01-01T00:00:00.000Z",
    };
    const held = await withSkewedClock(SKEW_MS, () =>
      store.commitTransition(
        "created",
        debitedFrom(transfer, 5),
        [{ topic: "commands", key: transfer.id, value: { type: "RecordTransfer", snapshot } }],
        1_000,
      ),
    );
    assert.ok(held !== null);
    const { rows } = await pool.query<{ payload: { snapshot: { updated_at: string; created_at: string } } }>(
      "SELECT payload FROM outbox",
    );
    assert.equal(rows[0]?.payload.snapshot.updated_at, held.updated_at);
    assert.equal(rows[0]?.payload.snapshot.created_at, transfer.created_at);
    assert.ok(
      Math.abs(Date.parse(held.updated_at) - Date.now()) < 60_000,
      "the row's time is not the skewed one",
    );
  });
});
