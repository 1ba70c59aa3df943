/**
 * The transactional outbox relay: moves committed outbox rows to Kafka, oldest first, in
 * bounded batches, deleting them only after the broker acknowledged them (acks=all). A crash
 * between the send and the delete re-sends the batch: consumers are idempotent. Row locks with
 * SKIP LOCKED let several instances relay side by side without sending a row twice at once.
 */
import type { JsonProducer, OutgoingMessage } from "#packages/kafka/index.ts";
import type { Logger } from "#packages/log/index.ts";
import { type Pool, withTransaction } from "#packages/pg/index.ts";
import { type CrashHook, noCrashes } from "#packages/runtime/faults.ts";
import { runLoop } from "#packages/runtime/loops.ts";
import { contextFromRow, injectKafkaHeaders } from "#packages/tracing/carriers.ts";

export interface OutboxRelay {
  wake(): void;
  stop(): Promise<void>;
}

export function startOutboxRelay(options: {
  pool: Pool;
  producer: JsonProducer;
  logger: Logger;
  batch_max: number;
  idle_poll_ms: number;
  crashes?: CrashHook;
}): OutboxRelay {
  const crashes = options.crashes ?? noCrashes;
  const stop = new AbortController();

  const relayOnce = async (): Promise<number> =>
    withTransaction(options.pool, async (client) => {
      const rows = await client.query<OutboxRow>(
        "SELECT id, topic, key, payload, traceparent FROM outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        [options.batch_max],
      );
      if (rows.rows.length === 0) return 0;
      await options.producer.send(rows.rows.map(messageOf));
      crashes.reached("after_outbox_send");
      await client.query("DELETE FROM outbox WHERE id = ANY($1::bigint[])", [rows.rows.map((r) => r.id)]);
      return rows.rows.length;
    });

  const loop = runLoop({
    signal: stop.signal,
    idle_ms: options.idle_poll_ms,
    onError: (error, failures) =>
      options.logger.warn({ err: error, failures }, "outbox relay failed; retrying"),
    // A full batch means more may be waiting; a partial one emptied the outbox as of its read,
    // and any commit since then has called wake(), which runs the loop again at once.
    tick: async () => ((await relayOnce()) === options.batch_max ? "busy" : "idle"),
  });

  return {
    wake: loop.wake,
    async stop() {
      stop.abort();
      await loop.done;
    },
  };
}

interface OutboxRow {
  id: string;
  topic: string;
  key: string;
  payload: unknown;
  traceparent: string | null;
}

/** Each row's message continues the trace of the step that wrote it, not one of the batch's. */
function messageOf(row: OutboxRow): OutgoingMessage {
  const message = { topic: row.topic, key: row.key, value: row.payload };
  if (row.traceparent === null) return message;
  return { ...message, headers: injectKafkaHeaders({}, contextFromRow(row.traceparent)) };
}
