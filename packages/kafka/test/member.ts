// One member of a consumer group in a process of its own, so that a test can SIGKILL it: prints
// one JSON line per batch with the partitions it consumed. Argv: group, topic. Brokers and the
// admin's password come from the test environment.
import { createLogger } from "#packages/log/index.ts";
import { startBatchConsumer } from "../index.ts";

const [group, topic] = process.argv.slice(2);
if (group === undefined || topic === undefined) throw new Error("usage: member.ts <group> <topic>");

startBatchConsumer({
  brokers: (process.env.TEST_KAFKA_BROKERS ?? "127.0.0.1:59092").split(","),
  sasl: { mechanism: "SCRAM-SHA-512", username: "admin", password: process.env.KAFKA_PASSWORD_ADMIN ?? "" },
  group_id: group,
  client_id: `member-${process.pid}`,
  topics: [topic],
  logger: createLogger("member", "warn"),
  batch_max: 100,
  async handleBatch(messages) {
    const partitions = [...new Set(messages.map((m) => m.partition))];
    process.stdout.write(`${JSON.stringify({ partitions })}\n`);
  },
});
