/**
 * transaction-command-service: the only writer of transfer records. A Kafka worker (consumer
 * group, so more instances share the partitions) with HTTP for health and operations only.
 */
import { MongoClient } from "mongodb";
import { z } from "zod";
import { internalPort, loadConfig, splitList } from "#packages/config/index.ts";
import { topicNames } from "#packages/contracts/messages.ts";
import { Authenticator, type AuthSecrets, secretsOrExit, securityFor } from "#packages/http/auth.ts";
import { registerCrashRoute } from "#packages/http/crash-route.ts";
import { ok } from "#packages/http/errors.ts";
import { BODY_ERRORS, envelope, errorResponses, registerOpenApi } from "#packages/http/openapi.ts";
import {
  closeBoth,
  createListeners,
  type HttpServer,
  type Listeners,
  listenBoth,
  registerHealth,
} from "#packages/http/server.ts";
import { kafkaSasl } from "#packages/kafka/access.ts";
import { createProducer, ensureTopics, pingKafka, startBatchConsumer } from "#packages/kafka/index.ts";
import { createLogger, type Logger } from "#packages/log/index.ts";
import { startServiceMetrics } from "#packages/metrics/service.ts";
import { ensureDisbursementIndexes } from "#packages/records/disbursements.ts";
import { ensureRecordIndexes } from "#packages/records/index.ts";
import { CrashSwitch } from "#packages/runtime/faults.ts";
import { onShutdown, retryStartup } from "#packages/runtime/index.ts";
import { startServiceTracing, traceListeners } from "#packages/tracing/service.ts";
import { configShape } from "./config.ts";
import { startDeadLetterTally } from "./dead-letters.ts";
import { createRecordWriter, type Faults } from "./writer.ts";

const SERVICE = "transaction-command-service";
/**
 * One start-up attempt on MongoDB (connect, index checks): FerretDB can accept a command and
 * not answer it while its PostgreSQL pool is stalled, and the service stays off the network
 * until this step is done.
 */
const MONGO_STARTUP_ATTEMPT_TIMEOUT_MS = 30_000;

type Config = ReturnType<typeof loadConfig<typeof configShape>>;

/** What the service runs on, opened by the caller: its config, logger and MongoDB client (connected). */
export interface AppDeps {
  config: Config;
  logger: Logger;
  mongo: MongoClient;
  secrets: AuthSecrets;
}

/** The service built on its engines, not yet listening; `closers` stop what it started, in order. */
export interface App {
  listeners: Listeners;
  closers: Array<() => Promise<unknown>>;
}

export async function createApp(deps: AppDeps): Promise<App> {
  const { config, logger, mongo } = deps;
  const auth = new Authenticator(deps.secrets);
  const brokers = splitList(config.KAFKA_BROKERS);
  const sasl = kafkaSasl(config);
  const topics = topicNames(config.KAFKA_TOPIC_PREFIX);
  const db = mongo.db(config.MONGO_DATABASE);
  const producer = createProducer({ brokers, sasl, client_id: SERVICE });
  const faults: Faults = { reject_records_for_source_user_ids: new Set() };
  const crashes = new CrashSwitch(logger);

  const listeners = createListeners({ logger });
  traceListeners(listeners);
  const metrics = startServiceMetrics(listeners, logger);
  metrics.declareDeadLetterTopics([topics.commands]);

  const consumer = startBatchConsumer({
    brokers,
    sasl,
    group_id: `${config.KAFKA_TOPIC_PREFIX}${SERVICE}`,
    client_id: SERVICE,
    topics: [topics.commands],
    logger,
    batch_max: config.RECORD_BATCH_MAX,
    metrics,
    handleBatch: createRecordWriter({
      db,
      producer,
      topics,
      logger,
      faults,
      attempts_max: config.RECORD_MAX_ATTEMPTS,
      service: SERVICE,
      crashes,
      metrics,
      resetStore: async () => {
        await mongo.close(true);
        await mongo.connect();
      },
    }),
  });

  metrics.collectConsumerLag(() => consumer.lag());
  const deadLetters = startDeadLetterTally({
    brokers,
    sasl,
    topic_prefix: config.KAFKA_TOPIC_PREFIX,
    topics,
    logger,
  });
  metrics.collectDeadLetters(() => deadLetters.rows());
  // Its only routes besides health are operations: on the internal listener.
  const app = listeners.internal;
  await registerOpenApi(listeners.public, {
    service: SERVICE,
    description: "The only writer of transfer records: a Kafka worker. HTTP for health only.",
  });
  await registerOpenApi(app, {
    service: SERVICE,
    description:
      "The only writer of transfer records: a Kafka worker. HTTP for health and, with FAULT_INJECTION=true, test faults (operator only).",
  });
  const health = {
    mongodb: () => db.command({ ping: 1 }),
    kafka: () => pingKafka(brokers, sasl),
    consumer: async () => {
      if (!consumer.isRunning()) throw new Error("consumer is not running");
    },
  };
  // Its work comes from Kafka, not from HTTP: a copy is ready while its MongoDB answers.
  const ready = ["mongodb"];
  registerHealth(listeners.public, SERVICE, health, { auth, ready });
  registerHealth(listeners.internal, SERVICE, health, { ready });

  if (config.FAULT_INJECTION) registerFaultRoutes(app, auth, crashes, faults, logger);
  return {
    listeners,
    closers: [
      () => closeBoth(listeners),
      () => consumer.stop(),
      () => deadLetters.stop(),
      () => producer.close(),
    ],
  };
}

/** Test builds only: crash points and refused records, for the operator. */
function registerFaultRoutes(
  app: HttpServer,
  auth: Authenticator,
  crashes: CrashSwitch,
  faults: Faults,
  logger: Logger,
): void {
  registerCrashRoute(app, auth, crashes, ["after_record_write"]);
  const faultsSchema = z.strictObject({
    reject_records_for_source_user_ids: z
      .array(z.number().int().positive().max(Number.MAX_SAFE_INTEGER))
      .max(1_000),
  });
  const faultsResponse = envelope(z.object({ faults: faultsSchema })).describe("The faults now injected");
  const ops = { onRequest: auth.guard("admin") };
  const opsSchema = { tags: ["ops"], security: securityFor("admin") };
  app.get(
    "/ops/faults",
    {
      ...ops,
      schema: {
        ...opsSchema,
        summary: "The injected faults (test builds only)",
        response: { 200: faultsResponse, ...errorResponses(401, 403) },
      },
    },
    async () =>
      ok({ faults: { reject_records_for_source_user_ids: [...faults.reject_records_for_source_user_ids] } }),
  );
  app.put(
    "/ops/faults",
    {
      ...ops,
      schema: {
        ...opsSchema,
        summary: "Refuse every record of transfers from these users, for good (test builds only)",
        body: faultsSchema,
        response: { 200: faultsResponse, ...errorResponses(BODY_ERRORS, 401, 403) },
      },
    },
    async (request) => {
      faults.reject_records_for_source_user_ids = new Set(request.body.reject_records_for_source_user_ids);
      logger.warn({ faults: request.body }, "fault injection changed");
      return ok({ faults: request.body });
    },
  );
}

async function main(): Promise<void> {
  const config = loadConfig(configShape);
  const logger = createLogger(SERVICE, config.LOG_LEVEL);
  const secrets = secretsOrExit(SERVICE, config, { checks: ["ADMIN_TOKEN"] }, logger);
  const brokers = splitList(config.KAFKA_BROKERS);
  const sasl = kafkaSasl(config);
  const topics = topicNames(config.KAFKA_TOPIC_PREFIX);
  const mongo = new MongoClient(config.MONGO_URL, {
    serverSelectionTimeoutMS: 5_000,
    connectTimeoutMS: 5_000,
    socketTimeoutMS: 15_000,
    maxPoolSize: 20,
  });
  const db = mongo.db(config.MONGO_DATABASE);
  await retryStartup(
    "mongodb",
    logger,
    async (attempt) => {
      // A fresh client per retry: an attempt that timed out may still hold the old one's pool.
      if (attempt > 0) await mongo.close(true);
      await mongo.connect();
      await ensureRecordIndexes(db);
      await ensureDisbursementIndexes(db);
    },
    120_000,
    MONGO_STARTUP_ATTEMPT_TIMEOUT_MS,
  );
  await retryStartup("kafka topics", logger, () =>
    ensureTopics({
      brokers,
      sasl,
      topics: Object.values(topics),
      partitions: config.KAFKA_PARTITIONS,
      logger,
    }),
  );

  // Before anything records: the routes are registered on the app's listeners.
  const tracing = await startServiceTracing(SERVICE, logger);
  const app = await createApp({ config, logger, mongo, secrets });
  onShutdown(logger, [...app.closers, () => mongo.close(), () => tracing.shutdown()]);
  await listenBoth(app.listeners, {
    host: config.HOST,
    port: config.TRANSACTION_COMMAND_SERVICE_PORT,
    internal_host: config.INTERNAL_HOST,
    internal_port: internalPort(
      config.TRANSACTION_COMMAND_SERVICE_INTERNAL_PORT,
      config.TRANSACTION_COMMAND_SERVICE_PORT,
    ),
  });
  logger.info({ port: config.TRANSACTION_COMMAND_SERVICE_PORT, topics }, "ready");
}

if (import.meta.main) await main();
