/** transaction-query-service: serves transfer records from MongoDB (the read side of CQRS). */
import { MongoClient } from "mongodb";
import { z } from "zod";
import { internalPort, loadConfig } from "#packages/config/index.ts";
import { transferIdSchema, userIdParamSchema } from "#packages/contracts/ids.ts";
import {
  decodeCursor,
  encodeCursor,
  listQuerySchema,
  paginationSchema,
} from "#packages/contracts/pagination.ts";
import { transferSnapshotSchema } from "#packages/contracts/transfer.ts";
import { Authenticator, secretsOrExit, securityFor } from "#packages/http/auth.ts";
import { notFound, ok } from "#packages/http/errors.ts";
import { envelope, errorResponses, registerOpenApi } from "#packages/http/openapi.ts";
import { closeBoth, createListeners, listenBoth, registerHealth } from "#packages/http/server.ts";
import { createLogger } from "#packages/log/index.ts";
import { startServiceMetrics } from "#packages/metrics/service.ts";
import { onShutdown, retryStartup } from "#packages/runtime/index.ts";
import { startServiceTracing, traceListeners } from "#packages/tracing/service.ts";
import { configShape } from "./config.ts";
import { registerDisbursementReads } from "./disbursements.ts";
import { findTransfer, listUserTransfers } from "./records.ts";

const SERVICE = "transaction-query-service";

const config = loadConfig(configShape);

const logger = createLogger(SERVICE, config.LOG_LEVEL);
// The read side serves transaction-service (QUERY_TOKEN) and the operator, never users directly:
// the public reads, with their per-user checks, go through transaction-service. It holds only
// the digests of those credentials, and nothing the ledger accepts.
const auth = new Authenticator(
  secretsOrExit(SERVICE, config, { checks: ["ADMIN_TOKEN", "QUERY_TOKEN"] }, logger),
);
const serviceOrAdmin = auth.guard("query", "admin");
const security = securityFor("query", "admin");
const mongo = new MongoClient(config.MONGO_URL, {
  serverSelectionTimeoutMS: 3_000,
  connectTimeoutMS: 3_000,
  socketTimeoutMS: 5_000,
  maxPoolSize: 50,
  readPreference: "primaryPreferred",
});
const db = mongo.db(config.MONGO_DATABASE);
await retryStartup("mongodb", logger, () => mongo.connect());

const tracing = await startServiceTracing(SERVICE, logger);
const listeners = createListeners({ logger });
traceListeners(listeners);
startServiceMetrics(listeners, logger);
const app = listeners.public;
await registerOpenApi(listeners.internal, {
  service: SERVICE,
  description: "The internal listener (loopback): health details.",
});
await registerOpenApi(app, {
  service: SERVICE,
  description:
    "The read side (CQRS): transfer records from MongoDB, for transaction-service and the operator.",
});
const health = { mongodb: () => db.command({ ping: 1 }) };
registerHealth(app, SERVICE, health, { auth });
registerHealth(listeners.internal, SERVICE, health);

app.get(
  "/transactions/:id",
  {
    onRequest: serviceOrAdmin,
    schema: {
      summary: "Read a transfer record",
      tags: ["transactions"],
      security,
      params: z.strictObject({ id: transferIdSchema }),
      response: {
        200: envelope(z.object({ transaction: transferSnapshotSchema })).describe("The record"),
        ...errorResponses(400, 401, 403, { 404: "No record for this transfer (yet)" }),
      },
    },
  },
  async (request) => {
    const transaction = await findTransfer(db, request.params.id);
    if (transaction === null) throw notFound(`transaction ${request.params.id}`);
    return ok({ transaction });
  },
);

app.get(
  "/transactions/user/:user_id",
  {
    onRequest: serviceOrAdmin,
    schema: {
      summary: "A user's transfer records, sent and received, newest first",
      tags: ["transactions"],
      security,
      params: z.strictObject({ user_id: userIdParamSchema }),
      querystring: listQuerySchema,
      response: {
        200: envelope(
          z.object({ transactions: z.array(transferSnapshotSchema), pagination: paginationSchema }),
        ).describe("A page; pass `pagination.next_cursor` as `cursor` for the next one"),
        ...errorResponses(400, 401, 403),
      },
    },
  },
  async (request) => {
    const { limit, cursor } = request.query;
    const after = cursor === undefined ? null : decodeCursor(cursor);
    const page = await listUserTransfers(db, request.params.user_id, limit, after);
    const last = page.items.at(-1);
    const next_cursor = page.has_more && last ? encodeCursor({ t: last.created_at, id: last.id }) : null;
    return ok({ transactions: page.items, pagination: { limit, has_more: page.has_more, next_cursor } });
  },
);

registerDisbursementReads(app, { db, auth });

onShutdown(logger, [() => closeBoth(listeners), () => mongo.close(), () => tracing.shutdown()]);
await listenBoth(listeners, {
  host: config.HOST,
  port: config.TRANSACTION_QUERY_SERVICE_PORT,
  internal_host: config.INTERNAL_HOST,
  internal_port: internalPort(
    config.TRANSACTION_QUERY_SERVICE_INTERNAL_PORT,
    config.TRANSACTION_QUERY_SERVICE_PORT,
  ),
});
logger.info({ port: config.TRANSACTION_QUERY_SERVICE_PORT }, "ready");
