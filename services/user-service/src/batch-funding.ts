/**
 * Batch funding: a disbursement's items held out of the payer's wallet in one ledger commit
 * (ledger_fund_batch in migrations/005_batch_funding.sql), all or nothing, idempotent by the
 * disbursement id. Served on the internal listener to the saga's credential only.
 */
import type { ZodTypeProvider } from "fastify-type-provider-zod";
import { z } from "zod";
import { transferIdSchema } from "#packages/contracts/ids.ts";
import {
  FUNDING_ITEMS_MAX,
  FUNDING_RESULTS,
  type FundingItemResult,
  type FundingRefusal,
  type FundingRequest,
  fundingItemResultSchema,
  fundingRequestSchema,
} from "#packages/contracts/ledger.ts";
import { MAX_MINOR, minorFromPg } from "#packages/contracts/money.ts";
import type { Authenticator } from "#packages/http/auth.ts";
import { securityFor } from "#packages/http/auth.ts";
import { ApiError, ok } from "#packages/http/errors.ts";
import { BODY_ERRORS, envelope, errorResponses } from "#packages/http/openapi.ts";
import type { HttpServer } from "#packages/http/server.ts";
import type { Pool } from "#packages/pg/index.ts";
import { invariant } from "./domain.ts";

const REFUSALS: ReadonlySet<string> = new Set(FUNDING_RESULTS.filter((r) => r !== "ok"));

/**
 * Holds every item whose payee is live, or nothing (insufficient_funds, source_not_found on
 * every item). A retry answers the first decision; the same disbursement id with another payer,
 * count or total answers funding_mismatch and changes nothing.
 */
export async function fundBatch(pool: Pool, request: FundingRequest): Promise<FundingItemResult[]> {
  const { items } = request;
  invariant(
    items.length >= 1 && items.length <= FUNDING_ITEMS_MAX,
    `a funding holds 1..${FUNDING_ITEMS_MAX} items, got ${items.length}`,
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
  invariant(rows.length === items.length, `${items.length} items answered ${rows.length} rows`);
  return rows.map((row, index) => {
    invariant(row.ordinal === index + 1, `funding row ${index} is item ${row.ordinal}`);
    if (row.result === "ok") {
      invariant(row.source_balance_before_minor !== null, `item ${row.transfer_id} held without a balance`);
      return {
        transfer_id: row.transfer_id,
        result: "ok",
        source_balance_before: minorFromPg(row.source_balance_before_minor),
      };
    }
    invariant(REFUSALS.has(row.result), `item ${row.transfer_id} answered '${row.result}'`);
    return { transfer_id: row.transfer_id, result: row.result as FundingRefusal };
  });
}

/** POST /internal/disbursements/:disbursement_id/fund on the internal listener (LEDGER_TOKEN). */
export function registerBatchFundingRoute(internal: HttpServer, auth: Authenticator, pool: Pool): void {
  internal.withTypeProvider<ZodTypeProvider>().post(
    "/internal/disbursements/:disbursement_id/fund",
    {
      // 1,000 items of about 90 bytes each: above the listener's default limit.
      bodyLimit: 256 * 1024,
      onRequest: auth.guard("ledger"),
      schema: {
        tags: ["internal"],
        security: securityFor("ledger"),
        summary: `Hold a disbursement's items (up to ${FUNDING_ITEMS_MAX}) out of the payer's wallet in one commit, or none (idempotent by disbursement id)`,
        params: z.strictObject({ disbursement_id: transferIdSchema }),
        body: fundingRequestSchema,
        response: {
          200: envelope(z.object({ results: z.array(fundingItemResultSchema) })).describe(
            "One result per item, in input order: `ok` (held), `dest_not_found` (not held, remembered), or the whole batch's refusal on every item (`insufficient_funds`, `source_not_found`, `funding_mismatch`)",
          ),
          ...errorResponses(BODY_ERRORS, 401, 403, {
            422: "A transfer id repeated, the payer among the payees, or a total over 2^53-1; nothing was held",
          }),
        },
      },
    },
    async (request) => {
      const { source_user_id, items } = request.body;
      const seen = new Map<string, number>();
      let total = 0n;
      for (const [index, item] of items.entries()) {
        const earlier = seen.get(item.transfer_id);
        if (earlier !== undefined) {
          throw new ApiError(
            422,
            "transfer_repeated_in_batch",
            `items.${index}.transfer_id repeats items.${earlier}`,
          );
        }
        seen.set(item.transfer_id, index);
        if (item.dest_user_id === source_user_id) {
          throw new ApiError(422, "same_wallet", `items.${index}.dest_user_id is the payer`);
        }
        total += BigInt(item.amount);
      }
      if (total > BigInt(MAX_MINOR)) {
        throw new ApiError(422, "total_too_large", `the items total ${total}, over ${MAX_MINOR} minor units`);
      }
      const results = await fundBatch(pool, {
        disbursement_id: request.params.disbursement_id,
        source_user_id,
        items,
      });
      return ok({ results });
    },
  );
}
