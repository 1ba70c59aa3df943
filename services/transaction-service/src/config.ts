/**
 * What transaction-service reads from its environment, with the defaults `npm start` uses. Kept apart from
 * main.ts so that tests (and the README's check) can read the shape without starting the service.
 */
import { commonEnv, credentialEnv, engineDefaults, env } from "#packages/config/index.ts";
import { LEDGER_BATCH_MAX } from "#packages/contracts/ledger.ts";
import { kafkaAuthEnv } from "#packages/kafka/access.ts";
import { webhookConfigShape } from "#packages/webhooks/index.ts";

export const configShape = {
  ...commonEnv,
  // Presents LEDGER_TOKEN and QUERY_TOKEN; verifies users' tokens.
  LEDGER_TOKEN: credentialEnv.LEDGER_TOKEN,
  QUERY_TOKEN: credentialEnv.QUERY_TOKEN,
  AUTH_TOKEN_SECRET: credentialEnv.AUTH_TOKEN_SECRET,
  AUTH_TOKEN_TTL_S: credentialEnv.AUTH_TOKEN_TTL_S,
  TOKEN_VERSION_CACHE_MS: credentialEnv.TOKEN_VERSION_CACHE_MS,
  TOKEN_VERSION_TIMEOUT_MS: credentialEnv.TOKEN_VERSION_TIMEOUT_MS,
  TRANSACTION_SERVICE_PORT: env.port(8003),
  /** Internal listener (/ops/*); default TRANSACTION_SERVICE_PORT + 1000. */
  TRANSACTION_SERVICE_INTERNAL_PORT: env.optionalPort(),
  SAGA_DATABASE_URL: env.string(engineDefaults.SAGA_DATABASE_URL),
  SAGA_DATABASE_POOL_MAX: env.int(20, 2, 200),
  KAFKA_BROKERS: env.string(engineDefaults.KAFKA_BROKERS),
  KAFKA_TOPIC_PREFIX: env.string(""),
  KAFKA_PARTITIONS: env.int(6, 1, 256),
  ...kafkaAuthEnv,
  REDIS_URL: env.string(engineDefaults.REDIS_URL),
  REDIS_KEY_PREFIX: env.string(""),
  /** user-service's internal listener, where the ledger's saga steps are. */
  USER_SERVICE_INTERNAL_URL: env.url(engineDefaults.USER_SERVICE_INTERNAL_URL),
  TRANSACTION_QUERY_SERVICE_URL: env.url(engineDefaults.TRANSACTION_QUERY_SERVICE_URL),
  LEDGER_TIMEOUT_MS: env.int(3_000, 100, 60_000),
  /** Most saga steps per ledger call (concurrent steps share one call and one ledger commit). */
  LEDGER_BATCH_MAX: env.int(LEDGER_BATCH_MAX, 1, LEDGER_BATCH_MAX),
  LEDGER_CALLS_IN_FLIGHT_MAX: env.int(2, 1, 64),
  /** Most transfers per saga statement (concurrent inserts and transitions share one commit). */
  SAGA_WRITE_BATCH_MAX: env.int(100, 1, 1_000),
  SAGA_WRITES_IN_FLIGHT_MAX: env.int(2, 1, 64),
  QUERY_TIMEOUT_MS: env.int(2_000, 100, 60_000),
  STEP_TIMEOUT_MS: env.int(5_000, 500, 600_000),
  RECORD_RESEND_MS: env.int(300_000, 500, 3_600_000),
  /** A transfer not final this long after its creation counts as overdue (dps_transfers_overdue, an alert). */
  TRANSFER_DEADLINE_MS: env.int(900_000, 1_000, 86_400_000),
  SWEEP_INTERVAL_MS: env.int(1_000, 50, 60_000),
  SWEEP_BATCH_MAX: env.int(200, 1, 5_000),
  OUTBOX_BATCH_MAX: env.int(500, 1, 5_000),
  /**
   * How long the relay lets outbox rows gather after a commit wakes it: fewer, fuller rounds (and
   * record packs) for a record that trails its transfer's answer by that much more.
   */
  OUTBOX_GATHER_MS: env.int(50, 0, 1_000),
  EVENT_BATCH_MAX: env.int(500, 1, 5_000),
  /**
   * Transfers of a batch of events handled at once: at least a pack of records (RECORD_PACK_MAX),
   * so a disbursement's items move in step and share saga statements and ledger calls.
   */
  EVENT_CONCURRENCY: env.int(256, 1, 1_024),
  CACHE_TTL_PENDING_MS: env.int(30_000, 100, 86_400_000),
  CACHE_TTL_FINAL_MS: env.int(600_000, 100, 86_400_000),
  CACHE_TTL_LIST_MS: env.int(5_000, 100, 86_400_000),
  CACHE_TIMEOUT_MS: env.int(100, 5, 10_000),
  FAULT_INJECTION: env.bool(false),
  /** Requests per user per window (0 = no limit); generous, so tests and benchmarks are not throttled. */
  RATE_LIMIT_MAX: env.int(100, 0, 1_000_000),
  RATE_LIMIT_WINDOW_MS: env.int(1_000, 100, 3_600_000),
  /** Reads held open by `Prefer: wait=N` at once in one copy; more are answered at once. */
  WAITING_READS_MAX: env.int(1_000, 0, 100_000),
  /** The same, per caller (a user, or the operator). */
  WAITING_READS_PER_CALLER_MAX: env.int(10, 0, 10_000),
  ...webhookConfigShape,
};
