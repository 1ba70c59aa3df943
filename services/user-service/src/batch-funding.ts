/**
 * Batch funding: a disbursement's items held out of the payer's wallet in one ledger commit
 * (ledger_fund_batch in migrations/005_batch_funding.sql), all or nothing, idempotent by the
 * disbursement id. Served on the internal listener to the saga's credential only.
 */
import type { ZodTypeProvider } from "fastify-type-provider-zod";
import { z } from "zod";
import { transferIdSchema, userIdSchema } from "#packages/contracts/ids.ts";
import { amountMinorSchema, MAX_MINOR, minorFromPg } from "#packages/contracts/money.ts";
import type { Authenticator } from "#packages/http/auth.ts";
import { securityFor } from "#packages/http/auth.ts";
import { ApiError, ok } from "#packages/http/errors.ts";
import { BODY_ERRORS, envelope, errorResponses } from "#packages/http/openapi.ts";
import type { HttpServer } from "#packages/http/server.ts";
import type { Pool } from "#packages/pg/index.ts";
import { assert } from "#packages/runtime/assert.ts";

/** The most items one funding may hold (the SQL function refuses more, too). */
export const FUNDING_ITEMS_MAX = 1_000;

export interface FundingItem {
  transfer_id: string;
  dest_user_id: number;
  amount: number;
}

export interface FundingRequest {
  disbursement_id: string;
  source_user_id: number;
  items: readonly FundingItem[];
}

/** Per item: held (with the payer's balance before its hold), or why not. */
export type FundingItemResult =
  | { transfer_id: string; result: "ok"; source_balance_before: number }
  | {
      transfer_id: string;
      result: "dest_not_found" | "insufficient_funds" | "source_not_found" | "funding_mismatch";
    };

const REFUSALS = new Set(["dest_not_found", "insufficient_funds", "source_not_found", "funding_mismatch"]);

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
    return { transfer_id: row.transfer_id, result: row.result as "dest_not_found" };
  });
}

const fundingBody = z.strictObject({
  source_user_id: userIdSchema,
  items: z
    .array(
      z.strictObject({
        transfer_id: transferIdSchema,
        dest_user_id: userIdSchema,
        amount: amountMinorSchema,
      }),
    )
    .min(1)
    .max(FUNDING_ITEMS_MAX),
});

const itemResultSchema = z.object({
  transfer_id: transferIdSchema,
  result: z.enum(["ok", "dest_not_found", "insufficient_funds", "source_not_found", "funding_mismatch"]),
  source_balance_before: z.number().int().nonnegative().optional(),
});

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
        body: fundingBody,
        response: {
          200: envelope(z.object({ results: z.array(itemResultSchema) })).describe(
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
        const earlier = seen.get(item.transfer_id.toLowerCase());
        if (earlier !== undefined) {
          throw new ApiError(
            422,
            "transfer_repeated_in_batch",
            `items.${index}.transfer_id repeats items.${earlier}`,
          );
        }
        seen.set(item.transfer_id.toLowerCase(), index);
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
