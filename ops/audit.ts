/**
 * `npm run audit`: checks the money guarantees against the live engines and prints a verdict.
 *
 * - I1 conservation: wallets + clearing + external sum to zero over the whole journal, so the
 *   money in wallets and in flight equals what was deposited; clearing holds exactly the
 *   transfers in flight.
 * - I2 no wallet is negative.
 * - I6 every wallet's stored balance equals the sum of its journal entries.
 * - I5 the MongoDB records agree with the ledger and the saga: a COMPLETED record has a posted
 *   hold of the same amount, a FAILED one a voided hold or none, and every transfer the saga
 *   finished has its record. Transfers still in flight are counted, and are a violation only
 *   with --quiet (when the system is supposed to be at rest).
 * - A transfer parked by a broken invariant is a violation, with its id and reason, until an
 *   operator re-drives it.
 *
 * Exits 1 on any violation. The ledger figures come from one repeatable-read snapshot; the
 * cross-check reads the saga page by page and the records in one pass, and is meant for a
 * quiet system.
 */
import { type Collection, MongoClient } from "mongodb";
import { engineDefaults } from "#packages/config/index.ts";
import type { HoldState } from "#packages/contracts/ledger.ts";
import { minorFromPg } from "#packages/contracts/money.ts";
import { createPool, type Pool } from "#packages/pg/index.ts";
import { RECORDS_COLLECTION, type TransferDocument } from "#packages/records/index.ts";
import { type AuditReport, audit as ledgerAudit } from "../services/user-service/src/ledger/audit.ts";
import { auditDisbursementRecords } from "./audit-disbursements.ts";

export interface AuditOptions {
  ledger_database_url: string;
  saga_database_url: string;
  mongo_url: string;
  mongo_database: string;
  /** Treat transfers still in flight as a violation. */
  quiet: boolean;
}

export interface AuditResult {
  ok: boolean;
  violations: string[];
  ledger: AuditReport;
  transfers: { total: number; completed: number; failed: number; in_flight: number };
  records: { total: number; matched: number };
  holds: { total: number; matched: number };
  /** Batch records in MongoDB, and how many stand at their batch's version in the saga. */
  disbursement_records: { total: number; matched: number };
}

const PAGE = 5_000;

export function auditOptionsFromEnv(env: NodeJS.ProcessEnv = process.env, quiet = false): AuditOptions {
  return {
    ledger_database_url: env.LEDGER_DATABASE_URL ?? engineDefaults.LEDGER_DATABASE_URL,
    saga_database_url: env.SAGA_DATABASE_URL ?? engineDefaults.SAGA_DATABASE_URL,
    mongo_url: env.MONGO_URL ?? engineDefaults.MONGO_URL,
    mongo_database: env.MONGO_DATABASE ?? engineDefaults.MONGO_DATABASE,
    quiet,
  };
}

export async function runAudit(options: AuditOptions): Promise<AuditResult> {
  const ledgerPool = createPool(options.ledger_database_url, {
    max: 2,
    application_name: "audit",
    statement_timeout_ms: 120_000,
  });
  const sagaPool = createPool(options.saga_database_url, {
    max: 2,
    application_name: "audit",
    statement_timeout_ms: 120_000,
  });
  const mongo = new MongoClient(options.mongo_url, {
    serverSelectionTimeoutMS: 10_000,
    socketTimeoutMS: 120_000,
  });
  const violations: string[] = [];
  const note = (message: string) => {
    if (violations.length < 50) violations.push(message);
  };
  try {
    await mongo.connect();
    const records = mongo.db(options.mongo_database).collection<TransferDocument>(RECORDS_COLLECTION);
    const ledger = await ledgerAudit(ledgerPool);

    noteLedgerViolations(ledger, note);

    // Read order matters on a system that is still moving. The saga is read first, then the
    // ledger holds and the records: a transfer the saga saw completed had its hold posted and
    // its record written before that (both only move forward), so they are seen too. (Reading
    // the records first would report a transfer that completed in between as a mismatch.)
    const sagaPages = await readSagaPages(sagaPool);
    const allRecords = await readAllRecords(records);
    const transfers = { total: 0, completed: 0, failed: 0, in_flight: 0 };
    const matched = { records: 0, holds: 0 };
    for (const rows of sagaPages) {
      const page = { rows };
      const ids = rows.map((r) => r.id);
      const holds = new Map(
        (
          await ledgerPool.query<Hold>(
            "SELECT transfer_id, state, amount_minor FROM holds WHERE transfer_id = ANY($1::uuid[])",
            [ids],
          )
        ).rows.map((h) => [h.transfer_id, h]),
      );
      const docs = new Map(
        ids.flatMap((id) => {
          const doc = allRecords.get(id);
          return doc === undefined ? [] : [[id, doc] as const];
        }),
      );
      matched.holds += holds.size;
      matched.records += docs.size;

      for (const row of page.rows) {
        transfers.total += 1;
        checkTransfer(row, holds.get(row.id), docs.get(row.id), { quiet: options.quiet, transfers, note });
      }
    }
    for (const parked of await parkedViolations(sagaPool)) note(parked);
    const holdsTotal = Number(
      (await ledgerPool.query<{ n: string }>("SELECT count(*) AS n FROM holds")).rows[0]?.n ?? 0,
    );
    const recordsTotal = allRecords.size;
    if (holdsTotal !== matched.holds)
      note(`I5: ${holdsTotal - matched.holds} ledger holds belong to no transfer`);
    if (recordsTotal !== matched.records)
      note(`I5: ${recordsTotal - matched.records} records belong to no transfer`);
    const batches = await auditDisbursementRecords(sagaPool, mongo.db(options.mongo_database), options.quiet);
    for (const problem of batches.problems) note(problem);

    return {
      ok: violations.length === 0,
      violations,
      ledger,
      transfers,
      records: { total: recordsTotal, matched: matched.records },
      holds: { total: holdsTotal, matched: matched.holds },
      disbursement_records: { total: batches.total, matched: batches.matched },
    };
  } finally {
    await Promise.allSettled([ledgerPool.end(), sagaPool.end(), mongo.close()]);
  }
}

type Note = (message: string) => void;

/** I1, I2 and I6 on the ledger's snapshot. */
function noteLedgerViolations(ledger: AuditReport, note: Note): void {
  if (ledger.sum_all_entries !== "0") note(`I1: journal entries sum to ${ledger.sum_all_entries}, not 0`);
  if (
    BigInt(ledger.total_wallet_balance) + BigInt(ledger.clearing_balance) !==
    BigInt(ledger.total_deposited)
  ) {
    note(
      `I1: wallets ${ledger.total_wallet_balance} + clearing ${ledger.clearing_balance} != deposited ${ledger.total_deposited}`,
    );
  }
  if (ledger.clearing_balance !== ledger.held_amount) {
    note(
      `I1: clearing ${ledger.clearing_balance} != amount held for transfers in flight ${ledger.held_amount}`,
    );
  }
  if (ledger.negative_wallets > 0) note(`I2: ${ledger.negative_wallets} negative wallets`);
  if (ledger.wallets_mismatching_journal.length > 0) {
    note(
      `I6: wallets whose balance differs from their journal: ${ledger.wallets_mismatching_journal.join(", ")}`,
    );
  }
  if (ledger.unbalanced_postings > 0) note(`I1: ${ledger.unbalanced_postings} postings do not sum to zero`);
  if (ledger.wallets_understating_held_out > 0) {
    note(
      `I4: ${ledger.wallets_understating_held_out} wallets understate the money held out of them (a refund might not fit)`,
    );
  }
}

type SagaRow = {
  id: string;
  state: string;
  amount_minor: string;
  failure_reason: string | null;
  parked_from: string | null;
};

/** Every saga transfer, in pages of PAGE in id order. */
async function readSagaPages(sagaPool: Pool): Promise<SagaRow[][]> {
  const sagaPages: SagaRow[][] = [];
  let after = "00000000-0000-0000-0000-000000000000";
  for (;;) {
    const page = await sagaPool.query<SagaRow>(
      "SELECT id, state, amount_minor, failure_reason, parked_from FROM transfers WHERE id > $1 ORDER BY id LIMIT $2",
      [after, PAGE],
    );
    if (page.rows.length === 0) break;
    sagaPages.push(page.rows);
    after = page.rows[page.rows.length - 1]?.id as string;
  }
  return sagaPages;
}

type RecordSummary = { status: string; amount: number };

async function readAllRecords(records: Collection<TransferDocument>): Promise<Map<string, RecordSummary>> {
  // One pass over the records (FerretDB v1 would scan the collection for every `$in` page).
  const allRecords = new Map<string, RecordSummary>();
  for await (const doc of records.find({}, { projection: { status: 1, amount: 1 }, batchSize: 10_000 })) {
    allRecords.set(doc._id, { status: doc.status, amount: doc.amount });
  }
  return allRecords;
}

type Hold = { transfer_id: string; state: HoldState; amount_minor: string };

/** I5 (and I4 with --quiet) for one transfer: its hold and its record agree with its state. */
function checkTransfer(
  row: SagaRow,
  hold: Hold | undefined,
  record: RecordSummary | undefined,
  at: { quiet: boolean; transfers: AuditResult["transfers"]; note: Note },
): void {
  const { transfers, note } = at;
  const amount = minorFromPg(row.amount_minor);
  if (hold && minorFromPg(hold.amount_minor) !== amount)
    note(`I5: ${row.id} hold amount differs from the transfer`);
  if (record && record.amount !== amount) note(`I5: ${row.id} record amount differs from the transfer`);
  if (row.state === "completed") {
    transfers.completed += 1;
    if (hold?.state !== "posted") note(`I5: ${row.id} completed but its hold is ${hold?.state ?? "missing"}`);
    if (record?.status !== "COMPLETED")
      note(`I5: ${row.id} completed but its record is ${record?.status ?? "missing"}`);
  } else if (row.state === "failed") {
    transfers.failed += 1;
    if (hold !== undefined && hold.state !== "voided")
      note(`I5: ${row.id} failed but its hold is ${hold.state}`);
    if (record?.status !== "FAILED")
      note(`I5: ${row.id} failed but its record is ${record?.status ?? "missing"}`);
  } else {
    transfers.in_flight += 1;
    if (at.quiet) note(`I4: ${row.id} is still ${row.state}`);
    const expected: Record<string, Array<HoldState | undefined>> = {
      created: [undefined, "held"],
      // A disbursement's item: its batch's funding may have committed, not yet recorded.
      funding: [undefined, "held"],
      held: ["held"],
      recorded: ["held"],
      // posted: a late credit went through; the saga completes the transfer.
      refunding: ["held", "voided", "posted"],
      posted: ["posted"],
      failing: [undefined, "voided"],
      // A hold that succeeded after the transfer failed, being voided.
      voiding: ["held", "voided"],
    };
    // A parked transfer's money stands where its state before parking left it.
    if (!(expected[row.parked_from ?? row.state] ?? []).includes(hold?.state))
      note(`I5: ${row.id} is ${row.state} but its hold is ${hold?.state ?? "missing"}`);
  }
}

/**
 * Transfers parked by a broken invariant (machine.ts: `parked`): each one is a bug an operator
 * must look at before re-driving it, so each is a violation, at rest or not, with its reason.
 */
export async function parkedViolations(sagaPool: Pool): Promise<string[]> {
  const { rows } = await sagaPool.query<{ id: string; parked_from: string; parked_reason: string }>(
    "SELECT id, parked_from, parked_reason FROM transfers WHERE state = 'parked' ORDER BY updated_at LIMIT 50",
  );
  return rows.map((r) => `parked: ${r.id} (from ${r.parked_from}): ${r.parked_reason}`);
}

export function formatAudit(result: AuditResult): string {
  const l = result.ledger;
  const t = result.transfers;
  const lines = [
    `ledger     accounts ${l.accounts}, wallets ${l.wallets}, postings ${l.postings}, journal entries ${l.journal_entries}`,
    `money      wallets ${l.total_wallet_balance} + clearing ${l.clearing_balance} = deposited ${l.total_deposited}; all entries sum to ${l.sum_all_entries}`,
    `in flight  clearing ${l.clearing_balance}, held for transfers ${l.held_amount}; holds held/posted/voided ${l.holds_by_state.held}/${l.holds_by_state.posted}/${l.holds_by_state.voided}`,
    `wallets    negative ${l.negative_wallets}, balance differs from journal ${l.wallets_mismatching_journal.length}`,
    `transfers  ${t.total} (completed ${t.completed}, failed ${t.failed}, in flight ${t.in_flight})`,
    `records    ${result.records.total} in MongoDB, ${result.records.matched} matched to transfers; holds ${result.holds.total}, ${result.holds.matched} matched`,
    `batches    ${result.disbursement_records.total} records in MongoDB, ${result.disbursement_records.matched} at their batch's version`,
  ];
  for (const v of result.violations) lines.push(`VIOLATION  ${v}`);
  lines.push(
    `verdict    ${result.ok ? "OK: I1 I2 I5 I6 hold" : `FAILED (${result.violations.length} violations)`}`,
  );
  return lines.join("\n");
}

if (import.meta.main) {
  const quiet = process.argv.includes("--quiet");
  const result = await runAudit(auditOptionsFromEnv(process.env, quiet));
  console.log(formatAudit(result));
  process.exit(result.ok ? 0 : 1);
}
