/**
 * transaction-command-service: the only writer of transfer records. A Kafka worker (consumer
 * group, so more instances share the partitions) with HTTP for health and operations only.
 */
import { MongoClient } from "mongodb";
import { z } from "zod";
import { commonEnv, engineDefaults, env, loadConfig, splitList } from "#packages/config/index.ts";
import { topicNames } from "#packages/contracts/messages.ts";
import { ApiError, ok } from "#packages/http/errors.ts";
import { createHttpServer, registerHealth } from "#packages/http/server.ts";
import { createProducer, ensureTopics, pingKafka, startBatchConsumer } from "#packages/kafka/index.ts";
import { createLogger } from "#packages/log/index.ts";
import { ensureRecordIndexes } from "#packages/records/index.ts";
import { bearerMatches, onShutdown, retryStartup } from "#packages/runtime/index.ts";
import { createRecordWriter, type Faults } from "./writer.ts";

const SERVICE = "transaction-command-service";

const config = loadConfig({
  ...commonEnv,
  TRANSACTION_COMMAND_SERVICE_PORT: env.port(8001),
  MONGO_URL: env.string(engineDefaults.MONGO_URL),
  MONGO_DATABASE: env.string(engineDefaults.MONGO_DATABASE),
  KAFKA_BROKERS: env.string(engineDefaults.KAFKA_BROKERS),
  KAFKA_TOPIC_PREFIX: env.string(""),
  KAFKA_PARTITIONS: env.int(6, 1, 256),
  RECORD_BATCH_MAX: env.int(500, 1, 5_000),
  RECORD_MAX_ATTEMPTS: env.int(5, 1, 100),
  FAULT_INJECTION: env.bool(false),
});

const logger = createLogger(SERVICE, config.LOG_LEVEL);
const brokers = splitList(config.KAFKA_BROKERS);
const topics = topicNames(config.KAFKA_TOPIC_PREFIX);

const mongo = new MongoClient(config.MONGO_URL, {
  serverSelectionTimeoutMS: 5_000,
  connectTimeoutMS: 5_000,
  socketTimeoutMS: 15_000,
  maxPoolSize: 20,
});
const db = mongo.db(config.MONGO_DATABASE);
const producer = createProducer({ brokers, client_id: SERVICE });
const faults: Faults = { reject_pending_for_source_user_ids: new Set() };

await retryStartup("mongodb", logger, async () => {
  await mongo.connect();
  await ensureRecordIndexes(db);
});
await retryStartup("kafka topics", logger, () =>
  ensureTopics({ brokers, topics: Object.values(topics), partitions: config.KAFKA_PARTITIONS, logger }),
);

const consumer = startBatchConsumer({
  brokers,
  group_id: `${config.KAFKA_TOPIC_PREFIX}${SERVICE}`,
  client_id: SERVICE,
  topics: [topics.commands],
  logger,
  max_batch: config.RECORD_BATCH_MAX,
  handleBatch: createRecordWriter({
    db,
    producer,
    topics,
    logger,
    faults,
    max_attempts: config.RECORD_MAX_ATTEMPTS,
    service: SERVICE,
  }),
});

const app = createHttpServer({ logger });
registerHealth(app, SERVICE, {
  mongodb: () => db.command({ ping: 1 }),
  kafka: () => pingKafka(brokers),
  consumer: async () => {
    if (!consumer.isRunning()) throw new Error("consumer is not running");
  },
});

if (config.FAULT_INJECTION) {
  const faultsBody = z.strictObject({
    reject_pending_for_source_user_ids: z.array(z.number().int().positive()).max(1_000),
  });
  app.addHook("onRequest", async (request) => {
    if (
      request.url.startsWith("/ops/") &&
      !bearerMatches(request.headers.authorization, config.ADMIN_TOKEN)
    ) {
      throw new ApiError(401, "unauthorized", "operator credential required");
    }
  });
  app.get("/ops/faults", async () =>
    ok({ faults: { reject_pending_for_source_user_ids: [...faults.reject_pending_for_source_user_ids] } }),
  );
  app.put("/ops/faults", { schema: { body: faultsBody } }, async (request) => {
    faults.reject_pending_for_source_user_ids = new Set(request.body.reject_pending_for_source_user_ids);
    logger.warn({ faults: request.body }, "fault injection changed");
    return ok({ faults: request.body });
  });
}

onShutdown(logger, [() => app.close(), () => consumer.stop(), () => producer.close(), () => mongo.close()]);
await app.listen({ host: config.HOST, port: config.TRANSACTION_COMMAND_SERVICE_PORT });
logger.info({ port: config.TRANSACTION_COMMAND_SERVICE_PORT, topics }, "ready");
