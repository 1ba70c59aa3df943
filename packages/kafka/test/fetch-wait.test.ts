/**
 * An idle consumer waits on the broker instead of asking again and again: few fetches a second
 * while nothing arrives, and a message sent meanwhile still arrives at once (the broker answers a
 * waiting fetch as soon as there is data). Against the test stack's Kafka.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { tracingChannel } from "node:diagnostics_channel";
import { after, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Admin, type SASLOptions } from "@platformatic/kafka";
import { createLogger } from "#packages/log/index.ts";
import { createProducer, startBatchConsumer } from "../index.ts";

const brokers = (process.env.TEST_KAFKA_BROKERS ?? "127.0.0.1:59092").split(",");
const sasl: SASLOptions = {
  mechanism: "SCRAM-SHA-512",
  username: "admin",
  password: process.env.KAFKA_PASSWORD_ADMIN ?? "",
};
const IDLE_MS = 3_000;
/** At a 50 ms wait an idle consumer made about 60 fetches in 3 s; at 500 ms, about 6. */
const IDLE_FETCHES_MAX = 20;
/** Generous for a loaded 2-core box: the point is that it is not held for the fetch wait's multiple. */
const DELIVERY_MAX_MS = 2_000;

describe("consumer fetch wait", { skip: process.env.KAFKA_PASSWORD_ADMIN ? false : "no test Kafka" }, () => {
  const topic = `test.fetch-wait-${randomUUID()}`;
  const producer = createProducer({ brokers, sasl, client_id: "fetch-wait-test" });
  after(async () => {
    await producer.close();
    const admin = new Admin({ clientId: "fetch-wait-test", bootstrapBrokers: brokers, sasl });
    await admin.deleteTopics({ topics: [topic] }).catch(() => {});
    await admin.close();
  });

  it("fetches rarely while idle and still delivers a new message at once", { timeout: 120_000 }, async () => {
    const admin = new Admin({ clientId: "fetch-wait-test", bootstrapBrokers: brokers, sasl });
    await admin.createTopics({ topics: [topic], partitions: 1, replicas: 1 });
    await admin.close();
    let fetches = 0;
    const onFetch = {
      start: () => {
        fetches += 1;
      },
    };
    const channel = tracingChannel("plt:kafka:consumer:fetches");
    channel.subscribe(onFetch as never);
    const arrived: number[] = [];
    const consumer = startBatchConsumer({
      brokers,
      sasl,
      group_id: `test.fetch-wait-${randomUUID()}`,
      client_id: "fetch-wait-test",
      topics: [topic],
      logger: createLogger("fetch-wait-test", "warn"),
      batch_max: 10,
      async handleBatch(messages) {
        for (const _ of messages) arrived.push(Date.now());
      },
    });
    try {
      // Joined and fetching: one message through first.
      await producer.send([{ topic, key: "k", value: { n: 0 } }]);
      for (let i = 0; i < 600 && arrived.length === 0; i++) await sleep(100);
      assert.equal(arrived.length, 1, "the consumer never got the first message");
      await sleep(500);
      fetches = 0;
      await sleep(IDLE_MS);
      assert.ok(fetches <= IDLE_FETCHES_MAX, `${fetches} fetches in ${IDLE_MS} ms of idleness`);
      const sent_at = Date.now();
      await producer.send([{ topic, key: "k", value: { n: 1 } }]);
      for (let i = 0; i < 100 && arrived.length < 2; i++) await sleep(20);
      assert.equal(arrived.length, 2, "the second message never arrived");
      assert.ok(
        (arrived[1] ?? 0) - sent_at < DELIVERY_MAX_MS,
        `delivered after ${(arrived[1] ?? 0) - sent_at} ms`,
      );
    } finally {
      channel.unsubscribe(onFetch as never);
      await consumer.stop();
    }
  });
});
