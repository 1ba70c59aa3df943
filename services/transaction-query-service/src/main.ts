/** transaction-query-service: serves transfer records from MongoDB (the read side of CQRS). */
import { type Db, MongoClient } from "mongodb";
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
import { Authenticator, type AuthSecrets, secretsOrExit, securityFor } from "#packages/http/auth.ts";
import { notFound, ok } from "#packages/http/errors.ts";
import { envelope, errorResponses, registerOpenApi } from "#packages/http/openapi.ts";
import {
  closeBoth,
  createListeners,
  type Listeners,
  listenBoth,
  registerHealth,
} from "#packages/http/server.ts";
import { createLogger, type Logger } from "#packages/log/index.ts";
import { startServiceMetrics } from "#packages/metrics/service.ts";
import { onShutdown, retryStartup } from "#packages/runtime/index.ts";
import { startServiceTracing, traceListeners } from "#packages/tracing/service.ts";
import { configShape } from "./config.ts";
import { registerDisbursementReads } from "./disbursements.ts";
import { findTransfer, listUserTransfers } from "./records.ts";

const SERVICE = "transaction-query-service";

type Config = ReturnType<typeof loadConfig<typeof configShape>>;

/** What the service runs on, opened by the caller: its config, logger and MongoDB database. */
export interface AppDeps {
  config: Config;
  logger: Logger;
  db: Db;
  secrets: AuthSecrets;
}

/** The service built on its database, not yet listening; `closers` stop what it started, in order. */
export interface App {
  listeners: Listeners;
  closers: Array<() => Promise<unknown>>;
}

export async function createApp(deps: AppDeps): Promise<App> {
  const { logger, db } = deps;
  const auth = new Authenticator(deps.secrets);
  const serviceOrAdmin = auth.guard("query", "admin");
  const security = securityFor("query", "admin");
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

  return { listeners, closers: [() => closeBoth(listeners)] };
}

async function main(): Promise<void> {
  const config = loadConfig(configShape);
  const logger = createLogger(SERVICE, config.LOG_LEVEL);
  // The read side serves transaction-service (QUERY_TOKEN) and the operator, never users directly:
  // the public reads, with their per-user checks, go through transaction-service. It holds only
  // the digests of those credentials, and nothing the ledger accepts.
  const secrets = secretsOrExit(SERVICE, config, { checks: ["ADMIN_TOKEN", "QUERY_TOKEN"] }, logger);
  const mongo = new MongoClient(config.MONGO_URL, {
    serverSelectionTimeoutMS: 3_000,
    connectTimeoutMS: 3_000,
    socketTimeoutMS: 5_000,
    maxPoolSize: 50,
    readPreference: "primaryPreferred",
  });
  await retryStartup("mongodb", logger, () => mongo.connect());
  const tracing = await startServiceTracing(SERVICE, logger);
  const app = await createApp({ config, logger, db: mongo.db(config.MONGO_DATABASE), secrets });
  onShutdown(logger, [...app.closers, () => mongo.close(), () => tracing.shutdown()]);
  await listenBoth(app.listeners, {
    host: config.HOST,
    port: config.TRANSACTION_QUERY_SERVICE_PORT,
    internal_host: config.INTERNAL_HOST,
    internal_port: internalPort(
      config.TRANSACTION_QUERY_SERVICE_INTERNAL_PORT,
      config.TRANSACTION_QUERY_SERVICE_PORT,
    ),
  });
  logger.info({ port: config.TRANSACTION_QUERY_SERVICE_PORT }, "ready");
}

if (import.meta.main) await main();
