/**
 * transaction-service: the public entry. Accepts transfers, orchestrates the saga (state in
 * its own PostgreSQL database, messages through a transactional outbox), consumes the record
 * writer's events, sweeps overdue transfers, and serves reads through Redis.
 */

import { fileURLToPath } from "node:url";
import { internalPort, loadConfig, splitList } from "#packages/config/index.ts";
import { topicNames } from "#packages/contracts/messages.ts";
import { Authenticator, type AuthSecrets, secretsOrExit } from "#packages/http/auth.ts";
import { registerCrashRoute } from "#packages/http/crash-route.ts";
import { registerOpenApi } from "#packages/http/openapi.ts";
import { RateLimiter } from "#packages/http/rate-limit.ts";
import {
  closeBoth,
  createListeners,
  type Listeners,
  listenBoth,
  registerHealth,
} from "#packages/http/server.ts";
import { CachedTokenVersions } from "#packages/http/token-versions.ts";
import { kafkaSasl } from "#packages/kafka/access.ts";
import {
  type ConsumedMessage,
  createProducer,
  deadLetterFor,
  ensureTopics,
  pingKafka,
  startBatchConsumer,
} from "#packages/kafka/index.ts";
import { createLogger, type Logger } from "#packages/log/index.ts";
import { startServiceMetrics } from "#packages/metrics/service.ts";
import { createPool, migrate, type Pool } from "#packages/pg/index.ts";
import { openRedis, type RedisClient } from "#packages/redis/index.ts";
import { CrashSwitch, noCrashes } from "#packages/runtime/faults.ts";
import { onShutdown, retryStartup } from "#packages/runtime/index.ts";
import { startServiceTracing, traceListeners } from "#packages/tracing/service.ts";
import { TransferCache } from "./cache.ts";
import { configShape } from "./config.ts";
import { startDisbursements } from "./disbursements/index.ts";
import { createDisbursementReads, type DisbursementReads } from "./disbursements/reads.ts";
import { registerRoutes } from "./http.ts";
import { collectSaga, recordTransition } from "./metrics.ts";
import { registerEventCountersRoute } from "./ops.ts";
import { registerRedriveRoute } from "./parked.ts";
import { QueryClient } from "./query-client.ts";
import { createEventHandler, type EventCounters } from "./saga/events.ts";
import { LedgerClient } from "./saga/ledger-client.ts";
import { publicStatus } from "./saga/machine.ts";
import { startOutboxRelay } from "./saga/outbox-relay.ts";
import { SagaRunner } from "./saga/runner.ts";
import { SagaStore } from "./saga/store.ts";
import { startSweeper } from "./saga/sweeper.ts";
import { FinalStatusWaiters, startFinalStatusListener } from "./waiting.ts";
import { startWebhookDispatcher } from "./webhook-dispatcher.ts";
import { registerWebhookRoutes } from "./webhooks.ts";

const SERVICE = "transaction-service";

/** What the service runs on, opened by the caller: its config, logger and engine clients. */
export interface AppDeps {
  config: Config;
  logger: Logger;
  pool: Pool;
  redis: RedisClient;
  secrets: AuthSecrets;
}

/** The service built on its engines, not yet listening; `closers` stop what it started, in order. */
export interface App {
  listeners: Listeners;
  closers: Array<() => Promise<unknown>>;
}

type Config = ReturnType<typeof loadConfig<typeof configShape>>;

/** The saga's store, its ledger client, and the runner that drives transfers with both. */
function createSagaCore(deps: AppDeps, secrets: AuthSecrets, topics: ReturnType<typeof topicNames>) {
  const { config, logger, pool } = deps;
  const store = new SagaStore(pool, {
    write_batch_max: config.SAGA_WRITE_BATCH_MAX,
    writes_in_flight_max: config.SAGA_WRITES_IN_FLIGHT_MAX,
    writes_waiting_max: 10_000,
  });
  const ledger = new LedgerClient(config.USER_SERVICE_INTERNAL_URL, secrets.ledger_token ?? "", {
    timeout_ms: config.LEDGER_TIMEOUT_MS,
    batch_max: config.LEDGER_BATCH_MAX,
    in_flight_max: config.LEDGER_CALLS_IN_FLIGHT_MAX,
    waiting_max: 10_000,
  });
  const runner = new SagaRunner(store, ledger, topics, logger, {
    step_timeout_ms: config.STEP_TIMEOUT_MS,
    record_resend_ms: config.RECORD_RESEND_MS,
  });
  return { store, runner };
}

/**
 * The consumer of the events topic (the records' events), which moves transfers on; an event that
 * cannot be read, or whose handling breaks an invariant, goes to the dead letters.
 */
function startEventConsumer(parts: {
  config: Config;
  logger: Logger;
  brokers: string[];
  sasl: ReturnType<typeof kafkaSasl>;
  topics: ReturnType<typeof topicNames>;
  metrics: ReturnType<typeof startServiceMetrics>;
  producer: ReturnType<typeof createProducer>;
  store: SagaStore;
  runner: SagaRunner;
  cache: TransferCache;
  disbursementReads: DisbursementReads;
}) {
  const eventCounters: EventCounters = { unknown_transfer_events: 0 };
  const events = startBatchConsumer({
    brokers: parts.brokers,
    sasl: parts.sasl,
    group_id: `${parts.config.KAFKA_TOPIC_PREFIX}${SERVICE}`,
    client_id: SERVICE,
    topics: [parts.topics.events],
    logger: parts.logger,
    batch_max: parts.config.EVENT_BATCH_MAX,
    metrics: parts.metrics,
    handleBatch: createEventHandler({
      store: parts.store,
      runner: parts.runner,
      logger: parts.logger,
      concurrency: parts.config.EVENT_CONCURRENCY,
      counters: eventCounters,
      // Invalidation only: the transfer entry is written through from the saga's own row (onChange
      // above), never from the event's snapshot, which a stale or forged message could carry.
      // Sent together: one round trip to Redis for the whole batch.
      onRecordEvents: async (transfers) => {
        await Promise.all([
          parts.cache.invalidateOlder(transfers.map((t) => ({ id: t.id, status: publicStatus(t.state) }))),
          parts.cache.touchUsers(transfers.flatMap((t) => [t.source_user_id, t.dest_user_id])),
        ]);
      },
      onDisbursementRecorded: (id) => parts.disbursementReads.recorded(id),
      onUnreadable: deadLetterEvent,
    }),
    deadLetter: deadLetterEvent,
  });

  async function deadLetterEvent(message: ConsumedMessage, reason: string): Promise<void> {
    await parts.producer.send([deadLetterFor(parts.topics.deadLetters, SERVICE, message, reason, 1)]);
    parts.metrics.deadLettered(message.topic);
  }
  return { eventCounters, events };
}

/** The saga's engine-side parts: its store, ledger steps, outbox, webhooks, event consumer and sweep. */
function startSaga(
  deps: AppDeps,
  secrets: AuthSecrets,
  listeners: Listeners,
  cache: TransferCache,
  disbursementReads: DisbursementReads,
) {
  const { config, logger, pool } = deps;
  const brokers = splitList(config.KAFKA_BROKERS);
  const sasl = kafkaSasl(config);
  const topics = topicNames(config.KAFKA_TOPIC_PREFIX);
  const metrics = startServiceMetrics(listeners, logger);
  cache.onLookup = (name, hit) => metrics.cacheLookup(name, hit);

  const producer = createProducer({ brokers, sasl, client_id: SERVICE });
  const { store, runner } = createSagaCore(deps, secrets, topics);

  // Write-through: the cache holds the newest status of a transfer from its first transition on
  // (versioned, so a late record event never puts an older status back; failures only log).
  runner.onChange = (snapshot) => void cache.putTransfer(snapshot);
  runner.onTransition = (transfer) => recordTransition(metrics, transfer);

  // Fault tests only (FAULT_INJECTION=true): crash points armed through PUT /ops/crash.
  const crashes = new CrashSwitch(logger);
  if (config.FAULT_INJECTION) runner.crashes = crashes;

  const relay = startOutboxRelay({
    pool,
    producer,
    logger,
    batch_max: config.OUTBOX_BATCH_MAX,
    idle_poll_ms: 500,
    gather_ms: config.OUTBOX_GATHER_MS,
    crashes: config.FAULT_INJECTION ? crashes : noCrashes,
    topic_roles: { commands: topics.commands },
  });
  store.onOutbox = () => relay.wake();

  // Webhooks: deliveries enqueued by the saga's transitions, sent at least once by any copy.
  const webhooks = startWebhookDispatcher({
    service: SERVICE,
    config,
    pool,
    logger,
    metrics,
    crashes: config.FAULT_INJECTION ? crashes : null,
  });
  store.onWebhooks = (deliveries) => webhooks.wake(deliveries);

  const { eventCounters, events } = startEventConsumer({
    config,
    logger,
    brokers,
    sasl,
    topics,
    metrics,
    producer,
    store,
    runner,
    cache,
    disbursementReads,
  });

  const sweeper = startSweeper({
    store,
    runner,
    logger,
    interval_ms: config.SWEEP_INTERVAL_MS,
    batch_max: config.SWEEP_BATCH_MAX,
    concurrency: 16,
    backoff_base_ms: config.STEP_TIMEOUT_MS,
    resend_base_ms: config.RECORD_RESEND_MS,
    resend_cap_ms: 600_000,
    backoff_cap_ms: 60_000,
  });

  return {
    brokers,
    sasl,
    topics,
    metrics,
    producer,
    store,
    runner,
    crashes,
    relay,
    webhooks,
    eventCounters,
    events,
    sweeper,
  };
}

// biome-ignore lint/complexity/noExcessiveLinesPerFunction: wiring; the service's parts are built and registered in order (cache, reads, saga, limits, waiters, OpenAPI, routes, health)
export async function createApp(deps: AppDeps): Promise<App> {
  const { config, logger, pool, redis, secrets } = deps;

  // One set of TTLs for the transfers' and the batches' entries.
  const cacheOptions = {
    prefix: config.REDIS_KEY_PREFIX,
    logger,
    ttl_pending_ms: config.CACHE_TTL_PENDING_MS,
    ttl_final_ms: config.CACHE_TTL_FINAL_MS,
    ttl_list_ms: config.CACHE_TTL_LIST_MS,
    timeout_ms: config.CACHE_TIMEOUT_MS,
  };
  const cache = new TransferCache(redis, cacheOptions);

  const listeners = createListeners({ logger });
  traceListeners(listeners);
  const query = new QueryClient(
    config.TRANSACTION_QUERY_SERVICE_URL,
    secrets.query_token ?? "",
    config.QUERY_TIMEOUT_MS,
  );
  // Before the saga: its event consumer refreshes these reads when a batch's record lands.
  const disbursementReads = createDisbursementReads({
    pool,
    redis,
    query,
    cache: cacheOptions,
  });
  const saga = startSaga(deps, secrets, listeners, cache, disbursementReads);
  const limiter = new RateLimiter(redis, {
    prefix: config.REDIS_KEY_PREFIX,
    max: config.RATE_LIMIT_MAX,
    window_ms: config.RATE_LIMIT_WINDOW_MS,
    timeout_ms: config.CACHE_TIMEOUT_MS,
    logger,
  });
  saga.metrics.declareDeadLetterTopics([saga.topics.events]);
  collectSaga(saga.metrics, pool, config.TRANSFER_DEADLINE_MS);
  saga.metrics.collectConsumerLag(() => saga.events.lag());
  // Waiting reads learn of final statuses from every copy through the saga database's NOTIFY.
  const waiters = new FinalStatusWaiters({
    waiting_max: config.WAITING_READS_MAX,
    waiting_per_caller_max: config.WAITING_READS_PER_CALLER_MAX,
  });
  const finalStatuses = startFinalStatusListener({
    url: config.SAGA_DATABASE_URL,
    waiters,
    logger,
    ping_interval_ms: 10_000,
    timeout_ms: 5_000,
  });
  const app = listeners.public;
  await registerOpenApi(listeners.internal, {
    service: SERVICE,
    description:
      "The internal listener (loopback): health details and, with FAULT_INJECTION=true, test faults.",
  });
  await registerOpenApi(app, {
    service: SERVICE,
    description:
      "The public entry: transfers (a crash-safe saga) and reads of transfers. Amounts are integer minor units. " +
      "Log in at user-service `POST /auth/login` and send the token as `Authorization: Bearer <token>`.",
  });
  const health = {
    postgres: () => pool.query("SELECT 1"),
    kafka: () => pingKafka(saga.brokers, saga.sasl),
    redis: () => redis.ping(),
    consumer: async () => {
      if (!saga.events.isRunning()) throw new Error("event consumer is not running");
    },
  };
  // Token versions from user-service's copy in Redis, remembered for TOKEN_VERSION_CACHE_MS.
  const auth = new Authenticator(
    secrets,
    new CachedTokenVersions(redis, {
      prefix: config.REDIS_KEY_PREFIX,
      cache_ms: config.TOKEN_VERSION_CACHE_MS,
      timeout_ms: config.TOKEN_VERSION_TIMEOUT_MS,
    }),
  );
  // A copy serves transfers while its saga database answers: Kafka is behind the outbox, the
  // cache optional, and the event consumer's work waits in its topic.
  const ready = ["postgres"];
  registerHealth(app, SERVICE, health, { auth, ready });
  registerHealth(listeners.internal, SERVICE, health, { ready });
  registerRoutes(app, {
    store: saga.store,
    runner: saga.runner,
    cache,
    query,
    logger,
    step_timeout_ms: config.STEP_TIMEOUT_MS,
    auth,
    limiter,
    waiters,
  });
  registerWebhookRoutes(app, {
    pool,
    onRequest: [limiter.guard(auth, "user")],
    allow_private: config.WEBHOOK_ALLOW_PRIVATE,
    secret_grace_ms: config.WEBHOOK_SECRET_GRACE_MS,
    wake: () => saga.webhooks.wake(),
  });
  const disbursements = startDisbursements({
    app,
    saga: saga.store,
    runner: saga.runner,
    auth,
    limiter,
    waiters,
    reads: disbursementReads,
    logger,
    ledger_url: config.USER_SERVICE_INTERNAL_URL,
    ledger_token: secrets.ledger_token ?? "",
    crashes: config.FAULT_INJECTION ? saga.crashes : noCrashes,
    onOutbox: () => saga.relay.wake(),
    timings: {
      step_timeout_ms: config.STEP_TIMEOUT_MS,
      record_resend_ms: config.RECORD_RESEND_MS,
      sweep_interval_ms: config.SWEEP_INTERVAL_MS,
    },
  });
  registerEventCountersRoute(listeners.internal, auth, saga.eventCounters);
  registerRedriveRoute(listeners.internal, auth, saga.store, logger);
  if (config.FAULT_INJECTION) {
    registerCrashRoute(listeners.internal, auth, saga.crashes, [
      "after_transfer",
      "after_post",
      "after_void",
      "after_outbox_send",
      "after_fund",
      "after_webhook_send",
    ]);
  }

  return {
    listeners,
    closers: [
      // Held reads answer now with the current status, so closing the listeners does not wait for them.
      async () => waiters.close(),
      () => closeBoth(listeners),
      () => finalStatuses.stop(),
      () => saga.sweeper.stop(),
      () => disbursements.stop(),
      () => saga.events.stop(),
      () => saga.relay.stop(),
      () => saga.webhooks.stop(),
      () => saga.producer.close(),
    ],
  };
}

/** The saga database migrated, the topics there, Redis connecting: what createApp runs on. */
export async function openDeps(config: Config, logger: Logger): Promise<AppDeps> {
  // It checks the operator's credential, presents its own to the ledger and the read side, and
  // verifies users' tokens.
  const secrets = secretsOrExit(
    SERVICE,
    config,
    { checks: ["ADMIN_TOKEN"], presents: ["LEDGER_TOKEN", "QUERY_TOKEN"], token_secret: true },
    logger,
  );
  const pool = createPool(config.SAGA_DATABASE_URL, {
    max: config.SAGA_DATABASE_POOL_MAX,
    application_name: SERVICE,
  });
  await retryStartup("saga database", logger, () =>
    migrate(pool, fileURLToPath(new URL("../migrations", import.meta.url))),
  );
  const topics = Object.values(topicNames(config.KAFKA_TOPIC_PREFIX));
  const brokers = splitList(config.KAFKA_BROKERS);
  await retryStartup("kafka topics", logger, () =>
    ensureTopics({ brokers, sasl: kafkaSasl(config), topics, partitions: config.KAFKA_PARTITIONS, logger }),
  );

  // The cache is optional: the service serves without it while Redis is away.
  const redis = openRedis({
    url: config.REDIS_URL,
    logger,
    unreachable_message: "redis not reachable yet; serving without cache",
  });
  return { config, logger, pool, redis, secrets };
}

async function main(): Promise<void> {
  const config = loadConfig(configShape);
  const logger = createLogger(SERVICE, config.LOG_LEVEL);
  // Before anything records: the routes are registered on the app's listeners.
  const tracing = await startServiceTracing(SERVICE, logger);
  const deps = await openDeps(config, logger);
  const app = await createApp(deps);
  onShutdown(logger, [
    ...app.closers,
    () => deps.redis.quit(),
    () => deps.pool.end(),
    () => tracing.shutdown(),
  ]);
  await listenBoth(app.listeners, {
    host: config.HOST,
    port: config.TRANSACTION_SERVICE_PORT,
    internal_host: config.INTERNAL_HOST,
    internal_port: internalPort(config.TRANSACTION_SERVICE_INTERNAL_PORT, config.TRANSACTION_SERVICE_PORT),
  });
  logger.info(
    { port: config.TRANSACTION_SERVICE_PORT, topics: topicNames(config.KAFKA_TOPIC_PREFIX) },
    "ready",
  );
}

if (import.meta.main) await main();
