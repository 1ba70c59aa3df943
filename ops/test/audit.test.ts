/**
 * The audit against real engines (TEST_SAGA_DATABASE_URL, TEST_LEDGER_DATABASE_URL,
 * TEST_MONGO_URL; skipped when unset), in fresh schemas and a fresh MongoDB database of its own:
 * a transfer parked by a broken invariant makes the verdict NOT OK, naming it and its reason.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { MongoClient } from "mongodb";
import { uuidv7 } from "#packages/contracts/ids.ts";
import { createPool, migrate, type Pool } from "#packages/pg/index.ts";
import { SagaStore } from "../../services/transaction-service/src/saga/store.ts";
import { type AuditOptions, formatAudit, runAudit } from "../audit.ts";

const SAGA_URL = process.env.TEST_SAGA_DATABASE_URL ?? "";
const LEDGER_URL = process.env.TEST_LEDGER_DATABASE_URL ?? "";
const MONGO_URL = process.env.TEST_MONGO_URL ?? "";
const SCHEMA = `audit_test_${process.pid}_${Date.now()}`;
const ROOT = join(import.meta.dirname, "..", "..");

const admins: Pool[] = [];
const pools: Pool[] = [];
let options: AuditOptions;
let saga: Pool;

/** A fresh schema on `base`, migrated; its URL and a pool on it. */
async function freshSchema(base: string, migrations: string): Promise<{ url: string; pool: Pool }> {
  const admin = createPool(base, { max: 1, application_name: "audit-test" });
  admins.push(admin);
  await admin.query(`CREATE SCHEMA ${SCHEMA}`);
  const url = new URL(base);
  url.searchParams.set("options", `-c search_path=${SCHEMA}`);
  const pool = createPool(url.toString(), { max: 2, application_name: "audit-test" });
  pools.push(pool);
  await migrate(pool, join(ROOT, migrations));
  return { url: url.toString(), pool };
}

describe("audit", {
  skip: SAGA_URL === "" || LEDGER_URL === "" || MONGO_URL === "" ? "the test engines are not set" : false,
}, () => {
  before(async () => {
    const sagaSchema = await freshSchema(SAGA_URL, "services/transaction-service/migrations");
    const ledgerSchema = await freshSchema(LEDGER_URL, "services/user-service/migrations");
    saga = sagaSchema.pool;
    options = {
      saga_database_url: sagaSchema.url,
      ledger_database_url: ledgerSchema.url,
      mongo_url: MONGO_URL,
      mongo_database: SCHEMA,
      quiet: false,
    };
  });

  after(async () => {
    await Promise.allSettled(pools.map((pool) => pool.end()));
    for (const admin of admins) {
      await admin.query(`DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE`).catch(() => {});
      await admin.end();
    }
    const mongo = new MongoClient(MONGO_URL, { serverSelectionTimeoutMS: 10_000 });
    await mongo
      .connect()
      .then(() => mongo.db(SCHEMA).dropDatabase())
      .catch(() => {});
    await mongo.close();
  });

  it("a parked transfer makes the verdict NOT OK, with its id and reason", async () => {
    const store = new SagaStore(saga);
    const { transfer } = await store.createOrGet({
      id: uuidv7(),
      idempotency_key: randomUUID(),
      request_fingerprint: "fp",
      source_user_id: 1,
      dest_user_id: 2,
      amount: 100,
      step_timeout_ms: 60_000,
    });
    const before = await runAudit(options);
    assert.deepEqual(before.violations, [], "a transfer in flight is no violation");
    assert.equal(before.ok, true);

    await store.park(transfer.id, "created", "invariant: hold answered hold_mismatch");
    const parked = await runAudit(options);
    assert.equal(parked.ok, false);
    assert.deepEqual(parked.violations, [
      `parked: ${transfer.id} (from created): invariant: hold answered hold_mismatch`,
    ]);
    assert.match(formatAudit(parked), /verdict {4}FAILED \(1 violations\)/);
  });
});
