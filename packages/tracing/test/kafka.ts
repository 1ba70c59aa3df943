/** The Kafka plumbing the tracing tests share: the test broker, topics, a producer, a consumer loop. */
import { randomUUID } from "node:crypto";
import {
  Admin,
  Consumer,
  type Message,
  Producer,
  type SASLOptions,
  stringDeserializers,
  stringSerializers,
} from "@platformatic/kafka";
import { kafkaAuthEnv, kafkaPasswordVariable, kafkaSasl } from "#packages/kafka/access.ts";

export type TextMessage = Message<string, string, string, string>;

export function brokers(): string[] {
  return (process.env.TEST_KAFKA_BROKERS ?? "127.0.0.1:59092").split(",");
}

/**
 * The broker's super user (the stack's setup principal): these tests make throwaway topics and
 * groups that no service principal's ACLs cover. None against a broker without SASL.
 */
function sasl(): { sasl?: SASLOptions } {
  const options = kafkaSasl({
    KAFKA_SASL_MECHANISM: kafkaAuthEnv.KAFKA_SASL_MECHANISM.parse(process.env.KAFKA_SASL_MECHANISM || ""),
    KAFKA_USERNAME: "admin",
    KAFKA_PASSWORD: process.env[kafkaPasswordVariable("admin")] ?? "",
  });
  return options === undefined ? {} : { sasl: options };
}

/** Names under the test prefix, so that the test stack's reset deletes them. */
export function topicName(what: string): string {
  return `${process.env.KAFKA_TOPIC_PREFIX ?? "test."}tracing.${what}.${randomUUID().slice(0, 8)}`;
}

export async function createTopics(topics: string[]): Promise<void> {
  const admin = new Admin({
    clientId: "tracing-test-admin",
    bootstrapBrokers: brokers(),
    ...sasl(),
    timeout: 10_000,
  });
  try {
    await admin.createTopics({ topics, partitions: 1, replicas: 1 });
  } finally {
    await admin.close();
  }
}

export function textProducer(client_id: string): Producer<string, string, string, string> {
  return new Producer({
    clientId: client_id,
    bootstrapBrokers: brokers(),
    ...sasl(),
    serializers: stringSerializers,
    timeout: 10_000,
  });
}

/** Hand every message of topic to handle, one at a time, until close(). */
export async function consumeEach(
  topic: string,
  client_id: string,
  handle: (message: TextMessage) => Promise<void>,
): Promise<{ close(): Promise<void> }> {
  const consumer = new Consumer({
    clientId: client_id,
    groupId: `${client_id}-${randomUUID().slice(0, 8)}`,
    bootstrapBrokers: brokers(),
    ...sasl(),
    deserializers: stringDeserializers,
    sessionTimeout: 10_000,
    heartbeatInterval: 1_000,
    timeout: 10_000,
  });
  const stream = await consumer.consume({
    topics: [topic],
    mode: "committed",
    fallbackMode: "earliest",
    maxWaitTime: 50,
  });
  const loop = (async () => {
    for await (const message of stream) await handle(message as TextMessage);
  })();
  return {
    async close() {
      await stream.close();
      await loop.catch(() => {});
      await consumer.close(true);
    },
  };
}
