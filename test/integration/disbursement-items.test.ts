/**
 * A batch's items (`GET /disbursements/:id/items`): once every item is settled, from the records
 * through the query service (and Redis); from the saga's own rows while the batch is PENDING or
 * when the query service cannot answer. Both paths give the same pages. Which path answered is
 * told apart by a reference changed in the saga's rows alone, behind the records' back.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { MongoClient } from "mongodb";
import { loadConfig } from "#packages/config/index.ts";
import { uuidv7 } from "#packages/contracts/ids.ts";
import { listenBoth } from "#packages/http/server.ts";
import { createLogger } from "#packages/log/index.ts";
import { createPool, type Pool } from "#packages/pg/index.ts";
import { RECORDS_COLLECTION } from "#packages/records/index.ts";
import { configShape } from "../../services/transaction-service/src/config.ts";
import { DisbursementStore } from "../../services/transaction-service/src/disbursements/store.ts";
import { type App, type AppDeps, createApp, openDeps } from "../../services/transaction-service/src/main.ts";
import { bearer, call, createUser, type TestUser, uniqueName, urls } from "./api.ts";
import { copyEnv } from "./second-copy.ts";

const UNKNOWN_USER = 2_000_000_000;
const SAGA_DATABASE_URL = process.env.TEST_SAGA_DATABASE_URL ?? "";
/** Suffix the tests give references in the saga's rows only. */
const SAGA_MARK = "~saga";

type Item = Record<string, unknown> & { reference: string; status: string };
type Page = { items: Item[]; pagination: { limit: number; has_more: boolean; next_cursor: string | null } };

/** Every page of one listing, as answered (items and pagination), from the first to the last. */
async function pages(base: string, id: string, token: string, query: string): Promise<Page[]> {
  const seen: Page[] = [];
  let cursor: string | null = null;
  for (let n = 0; n < 50; n++) {
    const q: string = `${query}${cursor === null ? "" : `&cursor=${cursor}`}`;
    const answer = await call("GET", `${base}/disbursements/${id}/items?${q}`, { headers: bearer(token) });
    assert.equal(answer.status, 200, `${q}: ${JSON.stringify(answer.body)}`);
    seen.push(answer.body.data);
    cursor = answer.body.data.pagination.next_cursor;
    if (cursor === null) return seen;
  }
  assert.fail("too many pages");
}

/** A page without its items' updated_at: the one field in which the saga's rows and the records differ. */
function withoutUpdatedAt(page: Page): Page {
  return { ...page, items: page.items.map(({ updated_at: _updated_at, ...item }) => item as Item) };
}

/** The listings compared: each status filter and none, in pages of 2 and of 100. */
const LISTINGS = ["", "&status=COMPLETED", "&status=FAILED", "&status=PENDING"].flatMap((status) => [
  `limit=2${status}`,
  `limit=100${status}`,
]);

/** transaction-service in this process, its query service an address where nothing listens. */
async function startWithoutQueryService(): Promise<{ app: App; deps: AppDeps; base: string }> {
  // Its query service: the port above its own, where nothing listens.
  const query_port = Number(new URL(urls.transaction).port) + 31;
  const { port, env } = await copyEnv(30, {
    TRANSACTION_QUERY_SERVICE_URL: `http://127.0.0.1:${query_port}`,
  });
  const deps = await openDeps(
    loadConfig(configShape, env),
    createLogger("transaction-service-no-query", "error"),
  );
  const app = await createApp(deps);
  await listenBoth(app.listeners, {
    host: "127.0.0.1",
    port,
    internal_host: "127.0.0.1",
    internal_port: port + 1_000,
  });
  return { app, deps, base: `http://127.0.0.1:${port}` };
}

/** Waits until every item of the batch is settled: its final record confirmed by the writer. */
async function settledInSaga(pool: Pool, id: string, timeout_ms = 60_000): Promise<void> {
  const deadline = Date.now() + timeout_ms;
  for (;;) {
    const { rows } = await pool.query<{ open: string }>(
      `SELECT count(*) AS open FROM transfers WHERE disbursement_id = $1 AND state NOT IN ('completed', 'failed')`,
      [id],
    );
    if (rows[0]?.open === "0") return;
    if (Date.now() > deadline) assert.fail(`batch ${id} not settled after ${timeout_ms} ms`);
    await sleep(100);
  }
}

describe("disbursement items", { skip: SAGA_DATABASE_URL === "" ? "no saga database URL" : false }, () => {
  let pool: Pool;
  let noQuery: { app: App; deps: AppDeps; base: string };
  let payer: TestUser;
  let settled: string;
  const unfunded: string[] = [];

  before(async () => {
    pool = createPool(SAGA_DATABASE_URL, { max: 2, application_name: "test-items" });
    noQuery = await startWithoutQueryService();
    payer = await createUser(100_000);
    const payee = await createUser();
    const amounts = [300, 200, 100, 50, 25];
    const made = await call("POST", `${urls.transaction}/disbursements`, {
      body: {
        source_user_id: payer.id,
        items: amounts.map((amount, i) => ({
          dest_user_id: i === 1 ? UNKNOWN_USER : payee.id,
          amount,
          reference: `item-${i}`,
        })),
      },
      headers: { ...bearer(payer.token), "idempotency-key": uniqueName("items") },
    });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    settled = made.body.data.disbursement.id;
    await settledInSaga(pool, settled);
  });

  after(async () => {
    // The saga's references as they were, and the unfunded batch funded by the sweep: the suite
    // ends quiet, with records that agree with the saga.
    await pool?.query(
      `UPDATE transfers SET reference = replace(reference, $2, '') WHERE disbursement_id = $1`,
      [settled, SAGA_MARK],
    );
    for (const id of unfunded) {
      await pool.query("UPDATE disbursements SET next_attempt_at = now() WHERE id = $1", [id]);
      await settledInSaga(pool, id, 90_000);
    }
    for (const close of noQuery?.app.closers ?? []) await close();
    await noQuery?.deps.redis.quit();
    await noQuery?.deps.pool.end();
    await pool?.end();
  });

  it("gives the same pages from the records as from the saga's rows, for every status and page size", async () => {
    for (const listing of LISTINGS) {
      const fromSaga = await pages(noQuery.base, settled, payer.token, listing);
      const fromRecords = await pages(urls.transaction, settled, payer.token, listing);
      assert.deepEqual(fromRecords.map(withoutUpdatedAt), fromSaga.map(withoutUpdatedAt), listing);
    }
    const all = (await pages(urls.transaction, settled, payer.token, "limit=100"))[0]?.items ?? [];
    // A record's updated_at is the time its status was decided, as GET /transactions/:id shows it
    // (the saga's row moves on once the writer confirms the record).
    for (const { reference: _reference, disbursement_id: _batch, ...transfer } of all) {
      const one = await call("GET", `${urls.transaction}/transactions/${transfer.id}`, {
        headers: bearer(payer.token),
      });
      assert.deepEqual(one.body.data.transaction, transfer);
    }
    assert.deepEqual(
      all.map((i) => [i.reference, i.status, i.disbursement_id]),
      [0, 1, 2, 3, 4].map((n) => [`item-${n}`, n === 1 ? "FAILED" : "COMPLETED", settled]),
    );
    const failed = await pages(urls.transaction, settled, payer.token, "limit=2&status=FAILED");
    assert.deepEqual(
      failed.map((p) => p.items.map((i) => i.reference)),
      [["item-1"]],
    );
    const paged = await pages(urls.transaction, settled, payer.token, "limit=2&status=COMPLETED");
    assert.deepEqual(
      paged.map((p) => [p.items.map((i) => i.reference), p.pagination.next_cursor]),
      [
        [["item-0", "item-2"], "2"],
        [["item-3", "item-4"], null],
      ],
    );
  });

  it("answers a settled batch from the records, and from the saga's rows when the query service cannot answer", async () => {
    await pool.query(`UPDATE transfers SET reference = reference || $2 WHERE disbursement_id = $1`, [
      settled,
      SAGA_MARK,
    ]);
    // Page sizes read nowhere before, so no cached page answers (the copy without a query
    // service reads first: it caches nothing it read from the saga's rows).
    for (const listing of ["limit=3", "limit=4&status=COMPLETED", "limit=5&status=FAILED"]) {
      const fromSaga = (await pages(noQuery.base, settled, payer.token, listing)).flatMap((p) => p.items);
      const fromRecords = (await pages(urls.transaction, settled, payer.token, listing)).flatMap(
        (p) => p.items,
      );
      assert.ok(fromRecords.length > 0, listing);
      assert.ok(
        fromRecords.every((i) => !i.reference.endsWith(SAGA_MARK)),
        `${listing}: ${JSON.stringify(fromRecords)}`,
      );
      assert.deepEqual(
        fromSaga.map((i) => i.reference),
        fromRecords.map((i) => `${i.reference}${SAGA_MARK}`),
        listing,
      );
    }
  });

  it("answers from the saga's rows when the records miss an item's place (a record written before items carried it)", async () => {
    const mongo = new MongoClient(process.env.TEST_MONGO_URL ?? "mongodb://127.0.0.1:27017/");
    const records = mongo
      .db(process.env.TEST_MONGO_DATABASE ?? "dps_test")
      .collection<{ _id: string }>(RECORDS_COLLECTION);
    const [first] = (await pages(urls.transaction, settled, payer.token, "limit=100"))[0]?.items ?? [];
    assert.ok(first !== undefined);
    try {
      await records.updateOne({ _id: String(first.id) }, { $unset: { disbursement_id: "", item_index: "" } });
      // After the previous test, the saga's rows alone have marked references.
      const listed = (await pages(urls.transaction, settled, payer.token, "limit=6")).flatMap((p) => p.items);
      assert.deepEqual(
        listed.map((i) => i.reference),
        [0, 1, 2, 3, 4].map((n) => `item-${n}${SAGA_MARK}`),
      );
    } finally {
      await records.updateOne(
        { _id: String(first.id) },
        { $set: { disbursement_id: settled, item_index: 0 } },
      );
      await mongo.close();
    }
  });

  it("finds a batch's records through FerretDB's index on disbursement_id, not a scan of all records", async () => {
    const { pgUrl } = await import("../../scripts/stack/engines/postgres.ts");
    const { ferretPgDatabase } = await import("../../scripts/stack/engines/ferretdb.ts");
    const ferret = createPool(pgUrl(ferretPgDatabase), { max: 1, application_name: "test-items" });
    try {
      const schema = process.env.TEST_MONGO_DATABASE ?? "dps_test";
      const { rows } = await ferret.query<{ tablename: string }>(
        "SELECT tablename FROM pg_tables WHERE schemaname = $1 AND tablename LIKE $2",
        [schema, `${RECORDS_COLLECTION}_%`],
      );
      const table = rows[0]?.tablename;
      assert.ok(table !== undefined, `no records table in ${schema}`);
      // FerretDB v1.24's own statement for find({disbursement_id}); a scan is ruled out so that
      // the plan shows whether an index can serve the expression at all, whatever the table's size.
      const client = await ferret.connect();
      try {
        await client.query("BEGIN");
        await client.query("SET LOCAL enable_seqscan = off");
        const plan = await client.query(
          `EXPLAIN SELECT _jsonb FROM "${schema}"."${table}" WHERE _jsonb->$1 @> $2`,
          ["disbursement_id", JSON.stringify(settled)],
        );
        const text = plan.rows.map((r: Record<string, string>) => Object.values(r).join(" ")).join("\n");
        assert.match(text, /Index Scan on \S+_batch_gin_/, text);
        await client.query("ROLLBACK");
      } finally {
        client.release();
      }
    } finally {
      await ferret.end();
    }
  });

  it("answers a PENDING batch, whose items have no records yet, from the saga's rows", async () => {
    const payee = await createUser();
    const id = uuidv7();
    // Written as POST /disbursements writes it, but left unfunded (items in `funding`, no record)
    // until the test hands it to the sweep.
    await new DisbursementStore(pool).createOrGet({
      id,
      idempotency_key: uniqueName("unfunded"),
      request_fingerprint: "test",
      source_user_id: payer.id,
      reference: null,
      items: [0, 1, 2].map((n) => ({
        transfer_id: uuidv7(),
        dest_user_id: payee.id,
        amount: 10,
        reference: `p-${n}`,
      })),
      total_amount: 30,
      funding_timeout_ms: 10 * 60_000,
    });
    unfunded.push(id);
    const listed = await pages(urls.transaction, id, payer.token, "limit=2");
    assert.deepEqual(
      listed.map((p) => [p.items.map((i) => [i.reference, i.status]), p.pagination.next_cursor]),
      [
        [
          [
            ["p-0", "PENDING"],
            ["p-1", "PENDING"],
          ],
          "1",
        ],
        [[["p-2", "PENDING"]], null],
      ],
    );
  });
});
