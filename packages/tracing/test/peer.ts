/**
 * A second traced process for tracing.test.ts, standing in for the ledger and the record writer:
 * - POST /ledger/debit continues the caller's trace from the HTTP headers (a server span);
 * - each message on TRACE_COMMANDS_TOPIC continues the producer's trace from the Kafka headers
 *   (a consumer span), and inside it an event goes out on TRACE_EVENTS_TOPIC (a producer span).
 * Prints "ready <port>" once it serves and consumes; logs JSON lines (with trace ids) on stdout;
 * exports its spans on SIGTERM and exits.
 */
import { pino } from "pino";
import { createHttpServer } from "#packages/http/server.ts";
import {
  contextFromKafkaHeaders,
  extractHttpHeaders,
  injectKafkaHeaders,
  startTracing,
  traceLogMixin,
  withSpan,
} from "../index.ts";
import { consumeEach, textProducer } from "./kafka.ts";

const commands = process.env.TRACE_COMMANDS_TOPIC ?? "";
const events = process.env.TRACE_EVENTS_TOPIC ?? "";
if (commands === "" || events === "")
  throw new Error("TRACE_COMMANDS_TOPIC and TRACE_EVENTS_TOPIC are required");

const tracing = await startTracing({ service: "trace-test-writer", batch_delay_ms: 100 });
const logger = pino({
  name: "trace-test-writer",
  base: { service: "trace-test-writer" },
  mixin: traceLogMixin,
});

const app = createHttpServer({ logger });
app.post("/ledger/debit", async (request) => {
  const transfer_id = String((request.body as { transfer_id?: unknown }).transfer_id);
  const parent = extractHttpHeaders(request.headers);
  return withSpan("ledger debit", { kind: "server", parent, attributes: { transfer_id } }, async () => {
    logger.info({ transfer_id }, "debited");
    return { debited: true };
  });
});

const producer = textProducer("trace-test-writer");
const consumer = await consumeEach(commands, "trace-test-writer", async (message) => {
  const parent = contextFromKafkaHeaders(message.headers);
  const transfer_id = message.key;
  await withSpan("record write", { kind: "consumer", parent, attributes: { transfer_id } }, async () => {
    logger.info({ transfer_id }, "record written");
    await withSpan("record event", { kind: "producer", attributes: { transfer_id } }, async () => {
      const value = JSON.stringify({ type: "RecordWritten", transfer_id });
      await producer.send({
        messages: [{ topic: events, key: transfer_id, value, headers: injectKafkaHeaders() }],
      });
    });
  });
});

await app.listen({ host: "127.0.0.1", port: 0 });
const address = app.server.address();
if (address === null || typeof address === "string") throw new Error("invariant: no TCP address");
process.stdout.write(`ready ${address.port}\n`);

process.once("SIGTERM", () => {
  void (async () => {
    await consumer.close();
    await producer.close();
    await app.close();
    await tracing.shutdown();
    process.exit(0);
  })();
});
