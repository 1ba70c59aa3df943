/**
 * A batch's items from their records: `{disbursement_id}` (and the status, when asked) in batch
 * order, the cursor being the last `item_index` served. transaction-service reads here once a
 * batch is settled (every item's final record written); before that it reads its own rows.
 */
import type { Db, Filter } from "mongodb";
import { z } from "zod";
import {
  type ItemsPage,
  type ItemsQuery,
  itemsPageSchema,
  itemsQuerySchema,
} from "#packages/contracts/disbursement.ts";
import { transferIdSchema } from "#packages/contracts/ids.ts";
import type { Authenticator } from "#packages/http/auth.ts";
import { securityFor } from "#packages/http/auth.ts";
import { ok } from "#packages/http/errors.ts";
import { envelope, errorResponses } from "#packages/http/openapi.ts";
import type { HttpServer } from "#packages/http/server.ts";
import { recordFromDocument, recordsCollection, type TransferDocument } from "#packages/records/index.ts";

export function registerItemReads(app: HttpServer, deps: { db: Db; auth: Authenticator }): void {
  app.get(
    "/disbursements/:id/items",
    {
      // Like the other record reads: transaction-service (QUERY_TOKEN) and the operator only.
      onRequest: deps.auth.guard("query", "admin"),
      schema: {
        summary: "A disbursement's item records in batch order",
        tags: ["disbursements"],
        security: securityFor("query", "admin"),
        params: z.strictObject({ id: transferIdSchema }),
        querystring: itemsQuerySchema,
        response: {
          200: envelope(itemsPageSchema).describe(
            "A page (empty when no record names the batch); pass `pagination.next_cursor` as `cursor` for the next one",
          ),
          ...errorResponses(400, 401, 403),
        },
      },
    },
    async (request) => ok(await itemPage(deps.db, request.params.id.toLowerCase(), request.query)),
  );
}

/** One page; fetches one extra item to know whether there is more. */
export async function itemPage(db: Db, disbursement_id: string, query: ItemsQuery): Promise<ItemsPage> {
  const filter: Filter<TransferDocument> = { disbursement_id };
  if (query.status !== undefined) filter.status = query.status;
  if (query.cursor !== undefined) filter.item_index = { $gt: Number(query.cursor) };
  const docs = await recordsCollection(db)
    .find(filter)
    .sort({ item_index: 1 })
    .limit(query.limit + 1)
    .toArray();
  const shown = docs.slice(0, query.limit).map(recordFromDocument);
  const items = shown.map(({ item_index: _index, ...record }) => ({
    ...record,
    disbursement_id,
    reference: record.reference ?? "",
  }));
  const last = shown.at(-1)?.item_index;
  const has_more = docs.length > query.limit;
  const next_cursor = has_more && last !== undefined ? String(last) : null;
  return { items, pagination: { limit: query.limit, has_more, next_cursor } };
}
