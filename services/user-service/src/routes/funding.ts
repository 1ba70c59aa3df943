/**
 * The batch funding route: served on the internal listener to the saga's credential only.
 */
import type { ZodTypeProvider } from "fastify-type-provider-zod";
import { z } from "zod";
import { transferIdSchema } from "#packages/contracts/ids.ts";
import {
  FUNDING_ITEMS_MAX,
  fundingItemResultSchema,
  fundingRequestSchema,
} from "#packages/contracts/ledger.ts";
import { AMOUNT_MAX_MINOR } from "#packages/contracts/money.ts";
import type { Authenticator } from "#packages/http/auth.ts";
import { securityFor } from "#packages/http/auth.ts";
import { ApiError, ok } from "#packages/http/errors.ts";
import { BODY_ERRORS, envelope, errorResponses } from "#packages/http/openapi.ts";
import type { HttpServer } from "#packages/http/server.ts";
import type { Pool } from "#packages/pg/index.ts";
import { fundBatch } from "../ledger/funding.ts";

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
      if (total > BigInt(AMOUNT_MAX_MINOR)) {
        throw new ApiError(
          422,
          "total_too_large",
          `the items total ${total}, over ${AMOUNT_MAX_MINOR} minor units`,
        );
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
