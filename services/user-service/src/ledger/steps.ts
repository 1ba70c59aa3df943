/**
 * Two-phase transfers: hold (source -> clearing), then post (clearing -> dest) or void
 * (clearing -> source); or both phases as one step (transfer: a hold and its post, refunded in
 * the same step when the credit cannot land). Each is idempotent on the transfer id. The steps run server-side (the
 * functions of migrations/002_ledger_batch.sql); this side validates, sends one statement, and
 * turns the answers into results and messages.
 */
import {
  type HoldRequest,
  type HoldState,
  isStepRefusal,
  LEDGER_BATCH_MAX,
  type LedgerOperation,
  type StepRefusalCode,
} from "#packages/contracts/ledger.ts";
import { AMOUNT_MAX_MINOR } from "#packages/contracts/money.ts";
import type { Pool } from "#packages/pg/index.ts";
import { assert } from "#packages/runtime/assert.ts";
import type { HoldRow } from "../domain.ts";
import { Refusal } from "./refusal.ts";

export type LedgerOperationResult =
  | { ok: true; hold: HoldRow }
  | { ok: false; code: StepRefusalCode; message: string };

/** A row of ledger_apply_batch: the step's input position (from 1), its result, and the hold. */
interface StepRow {
  ordinal: number;
  result: string;
  transfer_id: string | null;
  source_user_id: string | null;
  dest_user_id: string | null;
  amount_minor: string | null;
  state: HoldState | null;
  source_balance_before_minor: string | null;
  dest_balance_before_minor: string | null;
  created_at: Date | null;
  updated_at: Date | null;
}

/**
 * Applies up to LEDGER_BATCH_MAX saga steps in one transaction: one statement, one round trip,
 * one commit. Each step succeeds or is refused on its own (a refusal changes nothing and does not
 * affect the others); an engine failure applies none of them. Results come in input order, but
 * the steps are applied in lock order (by the wallet each locks, then by transfer id), so a step
 * must not count on another of its batch (a refund funding a hold): send such steps in turn.
 * A transfer may appear once per batch (the HTTP layer answers 400 before calling).
 */
export async function applyBatch(
  pool: Pool,
  operations: readonly LedgerOperation[],
): Promise<LedgerOperationResult[]> {
  assert(operations.length >= 1, "a batch holds at least one operation");
  assert(
    operations.length <= LEDGER_BATCH_MAX,
    `a batch holds at most ${LEDGER_BATCH_MAX} operations, got ${operations.length}`,
  );
  // UUIDs compare case-insensitively in PostgreSQL: so must the duplicate check.
  const ids = operations.map((o) => o.transfer_id.toLowerCase());
  assert(new Set(ids).size === ids.length, "a transfer appears more than once in one batch");
  for (const operation of operations) {
    const o = withParties(operation);
    if (o === null) continue;
    assert(Number.isSafeInteger(o.amount), `${o.op} ${o.transfer_id}: amount ${o.amount} is not an integer`);
    assert(o.amount > 0, `${o.op} ${o.transfer_id}: amount ${o.amount} is not positive`);
    assert(
      o.amount <= AMOUNT_MAX_MINOR,
      `${o.op} ${o.transfer_id}: amount ${o.amount} is above ${AMOUNT_MAX_MINOR}`,
    );
    assert(Number.isSafeInteger(o.source_user_id), `${o.op} ${o.transfer_id}: source ${o.source_user_id}`);
    assert(o.source_user_id > 0, `${o.op} ${o.transfer_id}: source ${o.source_user_id} is not positive`);
    assert(Number.isSafeInteger(o.dest_user_id), `${o.op} ${o.transfer_id}: destination ${o.dest_user_id}`);
    assert(o.dest_user_id > 0, `${o.op} ${o.transfer_id}: destination ${o.dest_user_id} is not positive`);
  }

  const { rows } = await pool.query<StepRow>(
    "SELECT * FROM ledger_apply_batch($1::text[], $2::uuid[], $3::bigint[], $4::bigint[], $5::bigint[])",
    [
      operations.map((o) => o.op),
      operations.map((o) => o.transfer_id),
      operations.map((o) => withParties(o)?.source_user_id ?? null),
      operations.map((o) => withParties(o)?.dest_user_id ?? null),
      operations.map((o) => withParties(o)?.amount ?? null),
    ],
  );
  assert(rows.length === operations.length, `${operations.length} steps answered ${rows.length} rows`);

  // Rows come in the order the steps were applied (wallet order); put them back in input order.
  const results: (LedgerOperationResult | undefined)[] = operations.map(() => undefined);
  for (const row of rows) {
    const index = row.ordinal - 1;
    const operation = operations[index];
    assert(operation !== undefined, `step ordinal ${row.ordinal} is out of range`);
    assert(results[index] === undefined, `step ordinal ${row.ordinal} is answered twice`);
    results[index] = toResult(operation, row);
  }
  return results.map((result, index) => {
    assert(result !== undefined, `step ${index + 1} was not answered`);
    return result;
  });
}

/** A step that names its parties and amount (hold, transfer); null for post and void. */
function withParties(operation: LedgerOperation) {
  return operation.op === "hold" || operation.op === "transfer" ? operation : null;
}

function toResult(operation: LedgerOperation, row: StepRow): LedgerOperationResult {
  if (row.result === "ok") {
    const hold = holdOf(row);
    assert(hold !== null, `step ${operation.op} ${operation.transfer_id} succeeded without a hold`);
    assert(
      hold.transfer_id === operation.transfer_id.toLowerCase(),
      `step ${operation.op} ${operation.transfer_id} answered with hold ${hold.transfer_id}`,
    );
    return { ok: true, hold };
  }
  const code = isStepRefusal(operation.op, row.result) ? row.result : null;
  assert(code !== null, `step ${operation.op} ${operation.transfer_id} answered '${row.result}'`);
  return { ok: false, code, message: refusalMessage(operation, code, holdOf(row)) };
}

/** The hold columns of a step row, or null when the step found no hold. */
function holdOf(row: StepRow): HoldRow | null {
  const {
    transfer_id,
    source_user_id,
    dest_user_id,
    amount_minor,
    state,
    source_balance_before_minor,
    created_at,
    updated_at,
  } = row;
  if (transfer_id === null) return null;
  assert(
    source_user_id !== null &&
      dest_user_id !== null &&
      amount_minor !== null &&
      state !== null &&
      source_balance_before_minor !== null &&
      created_at !== null &&
      updated_at !== null,
    `hold ${transfer_id} came back with missing columns`,
  );
  return {
    transfer_id,
    source_user_id,
    dest_user_id,
    amount_minor,
    state,
    source_balance_before_minor,
    dest_balance_before_minor: row.dest_balance_before_minor,
    created_at,
    updated_at,
  };
}

/** The messages the single-step API has always answered with. */
function refusalMessage(operation: LedgerOperation, code: StepRefusalCode, hold: HoldRow | null): string {
  const { transfer_id } = operation;
  const input = withParties(operation);
  switch (code) {
    case "same_wallet":
      return "source and destination are the same user";
    case "source_not_found":
      return `user ${input?.source_user_id} not found`;
    case "dest_not_found":
      return `user ${input?.dest_user_id} not found`;
    case "insufficient_funds":
      return `user ${input?.source_user_id} has less than ${input?.amount} minor units`;
    case "hold_mismatch":
      return `transfer ${transfer_id} was held with other parties or amount`;
    case "hold_not_found":
      return `no hold for transfer ${transfer_id}`;
    case "hold_voided":
      return `transfer ${transfer_id} was already voided`;
    case "hold_posted":
      return `transfer ${transfer_id} was already posted`;
    case "dest_unavailable":
      return `user ${hold?.dest_user_id} cannot be credited (closed or balance limit)`;
  }
}

/** One step as a batch of one; a refusal is thrown, with the code the single-step routes answer. */
async function applyOne(pool: Pool, operation: LedgerOperation): Promise<HoldRow> {
  const [result] = await applyBatch(pool, [operation]);
  assert(result !== undefined, `step ${operation.op} ${operation.transfer_id} was not answered`);
  if (!result.ok) throw new Refusal(result.code, result.message);
  return result.hold;
}

export async function getHold(pool: Pool, transfer_id: string): Promise<HoldRow | null> {
  const { rows } = await pool.query<HoldRow>("SELECT * FROM holds WHERE transfer_id = $1", [transfer_id]);
  return rows[0] ?? null;
}

/** Debit: source -> clearing. A retry (also a concurrent one) answers with the first hold. */
export async function holdFunds(pool: Pool, request: HoldRequest): Promise<HoldRow> {
  const { transfer_id, source_user_id, dest_user_id, amount } = request;
  return applyOne(pool, { op: "hold", transfer_id, source_user_id, dest_user_id, amount });
}

/** Credit: clearing -> dest. Refused with dest_unavailable (nothing changes) so the saga voids. */
export async function postHold(pool: Pool, transfer_id: string): Promise<HoldRow> {
  return applyOne(pool, { op: "post", transfer_id });
}

/** Refund: clearing -> source. The source cannot be closed while the hold is held. */
export async function voidHold(pool: Pool, transfer_id: string): Promise<HoldRow> {
  return applyOne(pool, { op: "void", transfer_id });
}
