/**
 * The record writer's MongoDB access on the real store (FerretDB in the test stack): a batch's
 * final records replace its PENDING ones in bulk, never one update per record, and still never
 * move a record backwards or overwrite another final status.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type Db, MongoClient } from "mongodb";
import type { TransferRecord, TransferStatus } from "#packages/contracts/transfer.ts";
import { ensureDisbursementIndexes } from "#packages/records/disbursements.ts";
import { ensureRecordIndexes, recordsCollection } from "#packages/records/index.ts";
import { applySnapshots } from "../src/records.ts";

const mongo_url = process.env.TEST_MONGO_URL ?? "mongodb://127.0.0.1:27017/";
const BATCH = "0190b5a8-0000-7000-8000-00000000d001";
const OTHER_BATCH = "0190b5a8-0000-7000-8000-00000000d002";

function idOf(n: number): string {
  return `0190b5a8-0000-7000-8000-${n.toString(16).padStart(12, "0")}`;
}

function item(n: number, status: TransferStatus, disbursement_id: string | null = BATCH): TransferRecord {
  const record: TransferRecord = {
    id: idOf(n),
    amount: 100 + n,
    source_user_id: 1,
    dest_user_id: 1_000 + n,
    source_init_bal: 1_000_000,
    dest_init_bal: status === "COMPLETED" ? 7 * n : null,
    status,
    failure_reason: status === "FAILED" ? "dest_not_found" : null,
    created_at: "2026-01-01T00:00:00.000Z",
    updated_at: status === "PENDING" ? "2026-01-01T00:00:00.000Z" : "2026-01-01T00:00:02.000Z",
  };
  return disbursement_id === null
    ? record
    : { ...record, disbursement_id, item_index: n, reference: `ref-${n}` };
}

describe("record writes on the real store", () => {
  const client = new MongoClient(mongo_url, { monitorCommands: true, serverSelectionTimeoutMS: 10_000 });
  let db: Db;
  const commands: string[] = [];

  before(async () => {
    db = client.db(`dps_records_test_${process.pid}`);
    await db.dropDatabase();
    client.on("commandStarted", (event) => {
      if (event.databaseName === db.databaseName) commands.push(event.commandName);
    });
  });
  after(async () => {
    await db.dropDatabase().catch(() => {});
    await client.close();
  });

  async function stored(n: number) {
    return recordsCollection(db).findOne({ _id: idOf(n) });
  }

  it("replaces a batch's PENDING records by its finals in bulk, leaving the rest alone", async () => {
    const finals = Array.from({ length: 20 }, (_, n) => item(n, n % 5 === 4 ? "FAILED" : "COMPLETED"));
    const pending = [
      ...finals.map((f) => ({ ...f, status: "PENDING" as const, dest_init_bal: null, failure_reason: null })),
      item(20, "PENDING"),
      item(21, "PENDING", OTHER_BATCH),
      item(22, "PENDING", null),
    ];
    assert.equal((await applySnapshots(db, pending)).size, 0);

    commands.length = 0;
    const conflicts = await applySnapshots(db, [...finals, item(22, "COMPLETED", null)]);
    assert.equal(conflicts.size, 0);
    // One update for the lone transfer; the batch's twenty went by delete and insert.
    assert.equal(commands.filter((c) => c === "update").length, 1, commands.join(","));

    for (const final of finals) {
      const doc = await stored(Number.parseInt(final.id.slice(-12), 16));
      assert.equal(doc?.status, final.status);
      assert.equal(doc?.rank, 2);
      assert.equal(doc?.dest_init_bal, final.dest_init_bal);
      assert.equal(doc?.reference, final.reference);
      assert.equal(doc?.disbursement_id, BATCH);
    }
    assert.equal((await stored(20))?.status, "PENDING");
    assert.equal((await stored(21))?.status, "PENDING");
    assert.equal((await stored(22))?.status, "COMPLETED");
  });

  it("inserts finals with no PENDING record, takes a redelivery as done and refuses another final", async () => {
    const finals = [item(30, "COMPLETED"), item(31, "FAILED"), item(32, "COMPLETED")];
    const lone = [item(40, "COMPLETED", null), item(41, "FAILED", null)];
    commands.length = 0;
    assert.equal((await applySnapshots(db, [...finals, ...lone])).size, 0);
    // Batch items and lone transfers alike: one insert, no update, no delete.
    assert.deepEqual(commands, ["insert"]);
    assert.equal((await stored(40))?.status, "COMPLETED");
    assert.equal((await stored(41))?.status, "FAILED");
    assert.equal((await applySnapshots(db, finals)).size, 0);

    const flipped = [item(30, "COMPLETED"), item(31, "COMPLETED"), item(32, "COMPLETED")];
    const conflicts = await applySnapshots(db, flipped);
    assert.deepEqual([...conflicts.keys()], [idOf(31)]);
    assert.equal((await stored(31))?.status, "FAILED");

    // A late PENDING never takes a final record back.
    assert.equal((await applySnapshots(db, [item(30, "PENDING")])).size, 0);
    assert.equal((await stored(30))?.status, "COMPLETED");
  });

  it("creates the missing indexes at start-up, and asks for none once they exist", async () => {
    // A restart must not issue createIndexes: FerretDB takes a lock over every collection for it.
    commands.length = 0;
    await ensureRecordIndexes(db);
    await ensureDisbursementIndexes(db);
    assert.equal(commands.filter((c) => c === "createIndexes").length, 4, commands.join(","));
    const names = (await recordsCollection(db).listIndexes().toArray()).map((index) => index.name);
    for (const name of ["party_newest_first", "status_updated", "batch_items"])
      assert.ok(names.includes(name), name);

    commands.length = 0;
    await ensureRecordIndexes(db);
    await ensureDisbursementIndexes(db);
    assert.deepEqual(
      commands.filter((c) => c !== "listIndexes"),
      [],
    );
  });
});
