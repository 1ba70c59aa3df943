/**
 * A three-node Kafka cluster (KRaft, three controllers) of its own, under a steady stream of
 * acks=all writes: SIGKILL the broker that leads the most partitions, bring it back, then SIGKILL
 * the active KRaft controller and bring it back. Topics have three replicas with two in sync, so
 * no acknowledged message may be lost, and writes must be back to 80% of their rate within 15 s
 * of each fault. Prints the time from each fault to the first write acknowledged after it and to
 * the recovered rate. Run by `npm run chaos -- --cluster` (three JVMs: too heavy for `npm test`).
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Admin, type SASLOptions } from "@platformatic/kafka";
import { createProducer, ensureTopics, startBatchConsumer } from "#packages/kafka/index.ts";
import { createLogger } from "#packages/log/index.ts";
import { busiestLeader, waitFullIsr } from "./cluster-kafka.ts";
import { rateRecovery } from "./recovery.ts";

// The stack reads its ports and data directory when first imported: set them, then import it.
const base = Number(process.env.DPS_TEST_PORT_BASE || 18000);
Object.assign(process.env, {
  DPS_DATA_DIR: join(import.meta.dirname, "..", "..", "..", ".data", "kafka-cluster-test"),
  DPS_KAFKA_PORT: String(base + 80),
  DPS_KAFKA_CONTROLLER_PORT: String(base + 81),
});
const { kafkaCluster, kafkaNode, kafkaBrokerList, activeControllerId } = await import("../engines/kafka.ts");
const { secrets } = await import("../env.ts");

const nodes = kafkaCluster(3);
const brokers = kafkaBrokerList(kafkaNode(0, 3));
const sasl: SASLOptions = {
  mechanism: "SCRAM-SHA-512",
  username: "admin",
  password: secrets().KAFKA_PASSWORD_ADMIN,
};
const topic = `chaos.cluster-${randomUUID()}`;
const logger = createLogger("kafka-cluster-chaos", "warn");
const recovery_max_ms = 15_000;
const say = (line: string) => process.stdout.write(`${line}\n`);

/** Acknowledged writes: the value written and when its acknowledgement came. */
const acked: { n: number; at: number }[] = [];

/** Writers that send numbered messages one at a time each, until stopped; a failed send is retried. */
function startWriters(count: number): { stop: () => Promise<void> } {
  let stopped = false;
  let next = 0;
  const producer = createProducer({ brokers, sasl, client_id: "cluster-chaos", timeout_ms: 5_000 });
  const writer = async () => {
    while (!stopped) {
      const n = next++;
      for (let attempt = 0; !stopped; attempt++) {
        try {
          await producer.send([{ topic, key: `k${n % 48}`, value: { n } }]);
          acked.push({ n, at: Date.now() });
          break;
        } catch {
          await sleep(Math.min(1_000, 50 * 2 ** attempt));
        }
      }
    }
  };
  const running = Array.from({ length: count }, writer);
  return {
    stop: async () => {
      stopped = true;
      await Promise.all(running);
      await producer.close();
    },
  };
}

/** Times from a fault at `at` to the first acknowledged write and to the rate being back at 80%. */
async function recoveryAfter(at: number, label: string): Promise<void> {
  await sleep(recovery_max_ms + 1_000);
  const first = acked.find((a) => a.at >= at);
  const recovery = rateRecovery(
    acked.map((a) => a.at),
    at,
    { baseline_ms: 5_000, window_ms: 1_000, recovery_max_ms, share: 0.8 },
  );
  say(
    `${label}: ${recovery.before_per_s.toFixed(0)} writes/s before; first write acknowledged after ${first === undefined ? "-" : first.at - at} ms; 80% of the rate after ${recovery.ms ?? "-"} ms`,
  );
  assert.ok(recovery.ms !== undefined, `${label}: writes not back to 80% within ${recovery_max_ms} ms`);
}

/** SIGKILL node.id `id`, watch the writes recover, start it again and wait until it is back in sync. */
async function killAndRestart(id: number, what: string): Promise<void> {
  const node = nodes[id - 1];
  assert.ok(node !== undefined, `no node ${id}`);
  const killed_at = Date.now();
  await node.kill9();
  await recoveryAfter(killed_at, `SIGKILL ${what} (${node.name})`);
  const restarted_at = Date.now();
  await node.start();
  const healthy_ms = Date.now() - restarted_at;
  const { ms: in_sync_ms, behind } = await waitFullIsr({ brokers, sasl }, 120_000, [topic]);
  assert.deepEqual(behind, [], "replicas not back in sync within 120 s");
  say(`restart ${node.name}: healthy after ${healthy_ms} ms, replicas in sync ${in_sync_ms} ms later`);
  await recoveryAfter(restarted_at, `restart ${node.name}`);
}

describe("kafka cluster under broker and controller kills", () => {
  let writers: { stop: () => Promise<void> } | undefined;
  before(async () => {
    const t0 = Date.now();
    await Promise.all(nodes.map((n) => n.start()));
    say(`three brokers up in ${Date.now() - t0} ms`);
    await ensureTopics({ brokers, sasl, topics: [topic], partitions: 6, logger });
  });
  after(async () => {
    await writers?.stop();
    await Promise.all(nodes.map((n) => n.stop()));
  });

  it("keeps three replicas of each partition with two in sync", async () => {
    const admin = new Admin({ clientId: "cluster-chaos", bootstrapBrokers: brokers, sasl, timeout: 5_000 });
    try {
      const metadata = await admin.metadata({ topics: [topic], forceUpdate: true });
      const partitions = metadata.topics.get(topic)?.partitions ?? [];
      assert.equal(partitions.length, 6);
      for (const p of partitions) assert.equal(p.replicas.length, 3);
      const [config] = await admin.describeConfigs({
        resources: [{ resourceType: 2, resourceName: topic, configurationKeys: ["min.insync.replicas"] }],
      });
      assert.equal(config?.configs.find((c) => c.name === "min.insync.replicas")?.value, "2");
    } finally {
      await admin.close();
    }
  });

  it("loses no acknowledged write when the busiest leader, then the active controller, is killed", {
    timeout: 600_000,
  }, async () => {
    writers = startWriters(4);
    await sleep(8_000);
    await killAndRestart(
      await busiestLeader({ brokers, sasl }, [topic]),
      "the broker leading the most partitions",
    );
    await killAndRestart(await activeControllerId(kafkaNode(0, 3)), "the active controller");
    await writers.stop();
    writers = undefined;

    // Read everything back: every acknowledged value must be there.
    const wanted = new Set(acked.map((a) => a.n));
    const seen = new Set<number>();
    const consumer = startBatchConsumer({
      brokers,
      sasl,
      group_id: `chaos.cluster-${randomUUID()}`,
      client_id: "cluster-chaos-reader",
      topics: [topic],
      logger,
      batch_max: 1_000,
      async handleBatch(messages) {
        for (const m of messages) seen.add((JSON.parse(m.value) as { n: number }).n);
      },
    });
    const t0 = Date.now();
    while (Date.now() - t0 < 120_000 && [...wanted].some((n) => !seen.has(n))) await sleep(500);
    await consumer.stop();
    const lost = [...wanted].filter((n) => !seen.has(n));
    say(`${wanted.size} acknowledged writes, ${lost.length} lost`);
    assert.deepEqual(lost.slice(0, 10), []);
  });
});
