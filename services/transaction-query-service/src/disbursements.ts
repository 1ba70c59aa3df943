/**
 * The read side of disbursement records: one batch by id, a payer's batches newest first,
 * mirroring the transfer reads (the same cursor, the same credentials), and a batch's items.
 */
import type { Db, Filter } from "mongodb";
import { z } from "zod";
import { disbursementSnapshotSchema } from "#packages/contracts/disbursement.ts";
import { transferIdSchema, userIdParamSchema } from "#packages/contracts/ids.ts";
import {
  type Cursor,
  decodeCursor,
  encodeCursor,
  listQuerySchema,
  paginationSchema,
} from "#packages/contracts/pagination.ts";
import { type Authenticator, securityFor } from "#packages/http/auth.ts";
import { notFound, ok } from "#packages/http/errors.ts";
import { envelope, errorResponses } from "#packages/http/openapi.ts";
import type { HttpServer } from "#packages/http/server.ts";
import {
  type DisbursementDocument,
  disbursementsCollection,
  fromDisbursementDocument,
} from "#packages/records/disbursements.ts";
import { registerItemReads } from "./disbursement-items.ts";

export function registerDisbursementReads(app: HttpServer, deps: { db: Db; auth: Authenticator }): void {
  // Like the transfer reads: transaction-service (QUERY_TOKEN) and the operator only.
  const onRequest = deps.auth.guard("query", "admin");
  const security = securityFor("query", "admin");
  app.get(
    "/disbursements/:id",
    {
      onRequest,
      schema: {
        summary: "Read a disbursement record",
        tags: ["disbursements"],
        security,
        params: z.strictObject({ id: transferIdSchema }),
        response: {
          200: envelope(z.object({ disbursement: disbursementSnapshotSchema })).describe("The record"),
          ...errorResponses(400, 401, 403, { 404: "No record for this disbursement (yet)" }),
        },
      },
    },
    async (request) => {
      // Records are keyed by the lower-case id the saga generated.
      const doc = await disbursementsCollection(deps.db).findOne({ _id: request.params.id.toLowerCase() });
      if (doc === null) throw notFound(`disbursement ${request.params.id}`);
      return ok({ disbursement: fromDisbursementDocument(doc) });
    },
  );

  app.get(
    "/disbursements/user/:user_id",
    {
      onRequest,
      schema: {
        summary: "A payer's disbursement records, newest first",
        tags: ["disbursements"],
        security,
        params: z.strictObject({ user_id: userIdParamSchema }),
        querystring: listQuerySchema,
        response: {
          200: envelope(
            z.object({ disbursements: z.array(disbursementSnapshotSchema), pagination: paginationSchema }),
          ).describe("A page; pass `pagination.next_cursor` as `cursor` for the next one"),
          ...errorResponses(400, 401, 403),
        },
      },
    },
    async (request) => {
      const { limit, cursor } = request.query;
      const after = cursor === undefined ? null : decodeCursor(cursor);
      const page = await listPayerDisbursements(deps.db, request.params.user_id, limit, after);
      const last = page.items.at(-1);
      const next_cursor = page.has_more && last ? encodeCursor({ t: last.created_at, id: last.id }) : null;
      return ok({ disbursements: page.items, pagination: { limit, has_more: page.has_more, next_cursor } });
    },
  );

  registerItemReads(app, deps);
}

async function listPayerDisbursements(db: Db, user_id: number, limit: number, after: Cursor | null) {
  const filter: Filter<DisbursementDocument> = { source_user_id: user_id };
  if (after !== null) {
    const t = new Date(after.t);
    filter.$or = [{ created_at: { $lt: t } }, { created_at: t, _id: { $lt: after.id } }];
  }
  const docs = await disbursementsCollection(db)
    .find(filter)
    .sort({ created_at: -1, _id: -1 })
    .limit(limit + 1)
    .toArray();
  return { items: docs.slice(0, limit).map(fromDisbursementDocument), has_more: docs.length > limit };
}
