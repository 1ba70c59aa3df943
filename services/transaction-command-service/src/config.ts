/**
 * What transaction-command-service reads from its environment, with the defaults `npm start` uses. Kept apart from
 * main.ts so that tests (and the README's check) can read the shape without starting the service.
 */
import { commonEnv, engineDefaults, env } from "#packages/config/index.ts";
import { kafkaAuthEnv } from "#packages/kafka/access.ts";

export const configShape = {
  ...commonEnv,
  TRANSACTION_COMMAND_SERVICE_PORT: env.port(8001),
  /** Internal listener (/ops/*, health details); default TRANSACTION_COMMAND_SERVICE_PORT + 1000. */
  TRANSACTION_COMMAND_SERVICE_INTERNAL_PORT: env.optionalPort(),
  MONGO_URL: env.string(engineDefaults.MONGO_URL),
  MONGO_DATABASE: env.string(engineDefaults.MONGO_DATABASE),
  KAFKA_BROKERS: env.string(engineDefaults.KAFKA_BROKERS),
  KAFKA_TOPIC_PREFIX: env.string(""),
  KAFKA_PARTITIONS: env.int(6, 1, 256),
  ...kafkaAuthEnv,
  RECORD_BATCH_MAX: env.int(500, 1, 5_000),
  RECORD_MAX_ATTEMPTS: env.int(5, 1, 100),
  FAULT_INJECTION: env.bool(false),
};
