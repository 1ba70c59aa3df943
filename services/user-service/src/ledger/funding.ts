/**
 * Batch funding: a disbursement's items held out of the payer's wallet in one ledger commit
 * (ledger_fund_batch in migrations/005_batch_funding.sql), all or nothing, idempotent by the
 * disbursement id.
 */
import {
  FUNDING_ITEMS_MAX,
  FUNDING_RESULTS,
  type FundingItemResult,
  type FundingRefusal,
  type FundingRequest,
} from "#packages/contracts/ledger.ts";
import { minorFromPg } from "#packages/contracts/money.ts";
import type { Pool } from "#packages/pg/index.ts";
import { assert } from "#packages/runtime/assert.ts";

const REFUSALS: ReadonlySet<string> = new Set(FUNDING_RESULTS.filter((r) => r !== "ok"));

/**
 * Holds every item whose payee is live, or nothing (insufficient_funds, source_not_found on
 * every item). A retry answers the first decision; the same disbursement id with another payer,
 * count or total answers funding_mismatch and changes nothing.
 */
export async function fundBatch(pool: Pool, request: FundingRequest): Promise<FundingItemResult[]> {
  const { items } = request;
  assert(items.length >= 1, "a funding holds at least one item");
  assert(
    items.length <= FUNDING_ITEMS_MAX,
    `a funding holds at most ${FUNDING_ITEMS_MAX} items, got ${items.length}`,
  );
  const { rows } = await pool.query<{
    ordinal: number;
    transfer_id: string;
    result: string;
    source_balance_before_minor: string | null;
  }>("SELECT * FROM ledger_fund_batch($1::uuid, $2::bigint, $3::uuid[], $4::bigint[], $5::bigint[])", [
    request.disbursement_id,
    request.source_user_id,
    items.map((i) => i.transfer_id),
    items.map((i) => i.dest_user_id),
    items.map((i) => i.amount),
  ]);
  assert(rows.length === items.length, `${items.length} items answered ${rows.length} rows`);
  return rows.map((row, index) => {
    assert(row.ordinal === index + 1, `funding row ${index} is item ${row.ordinal}`);
    if (row.result === "ok") {
      assert(row.source_balance_before_minor !== null, `item ${row.transfer_id} held without a balance`);
      return {
        transfer_id: row.transfer_id,
        result: "ok",
        source_balance_before: minorFromPg(row.source_balance_before_minor),
      };
    }
    assert(REFUSALS.has(row.result), `item ${row.transfer_id} answered '${row.result}'`);
    return { transfer_id: row.transfer_id, result: row.result as FundingRefusal };
  });
}
