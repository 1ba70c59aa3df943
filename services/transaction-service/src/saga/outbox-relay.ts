/**
 * The transactional outbox relay: moves committed outbox rows to Kafka, oldest first, in
 * bounded batches, deleting them only after the broker acknowledged them (acks=all). A crash
 * between the send and the delete re-sends the batch: consumers are idempotent. Row locks with
 * SKIP LOCKED let several instances relay side by side without sending a row twice at once.
 */
import { setTimeout as sleep } from "node:timers/promises";
import type { JsonProducer, OutgoingMessage } from "#packages/kafka/index.ts";
import type { Logger } from "#packages/log/index.ts";
import { type Pool, withTransaction } from "#packages/pg/index.ts";
import { type CrashHook, noCrashes } from "#packages/runtime/faults.ts";
import { backoff_ms } from "#packages/runtime/index.ts";
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
  /** Topics named by role in rows the database writes itself ('@commands'), mapped to real names. */
  topic_roles?: Readonly<Record<string, string>>;
}): OutboxRelay {
  const crashes = options.crashes ?? noCrashes;
  let stopped = false;
  let wakeUp: (() => void) | null = null;
  let pendingWake = false;

  const relayOnce = async (): Promise<number> =>
    withTransaction(options.pool, async (client) =>
      relayBatch(
        {
          oldest: async (limit) =>
            (
              await client.query<OutboxRow>(
                "SELECT id, topic, key, payload, traceparent FROM outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                [limit],
              )
            ).rows,
          remove: async (ids) => {
            await client.query("DELETE FROM outbox WHERE id = ANY($1::bigint[])", [ids]);
          },
        },
        options.producer,
        { batch_max: options.batch_max, crashes, topic_roles: options.topic_roles ?? {} },
      ),
    );

  const loop = async () => {
    let failures = 0;
    while (!stopped) {
      try {
        pendingWake = false;
        const sent = await relayOnce();
        failures = 0;
        // A full batch means more may be waiting; a partial one emptied the outbox as of its
        // read, and any commit since then has called wake() (pendingWake): no need to ask again.
        if (!idleAfter(sent, options.batch_max, pendingWake)) continue;
        await new Promise<void>((resolve) => {
          wakeUp = resolve;
          setTimeout(resolve, options.idle_poll_ms).unref();
        });
        wakeUp = null;
      } catch (error) {
        failures += 1;
        options.logger.warn({ err: error, failures }, "outbox relay failed; retrying");
        await sleep(backoff_ms(failures, 100, 5_000));
      }
    }
  };
  const done = loop();

  return {
    wake() {
      pendingWake = true;
      wakeUp?.();
    },
    async stop() {
      stopped = true;
      wakeUp?.();
      await done;
    },
  };
}

/**
 * Whether the relay may wait after a batch of `sent`: not after a full batch (more may be
 * waiting), nor when a commit woke it during the batch (its rows may be after the batch's read).
 */
export function idleAfter(sent: number, batch_max: number, woken: boolean): boolean {
  return sent < batch_max && !woken;
}

/** The outbox rows of one relay transaction (locked until it ends). */
export interface OutboxBatchStore {
  oldest(limit: number): Promise<OutboxRow[]>;
  remove(ids: string[]): Promise<void>;
}

/**
 * One batch: the oldest rows sent, then removed only once the broker has them all. A failed
 * send removes nothing (the rows go again: at least once); a crash between the two re-sends.
 */
export async function relayBatch(
  store: OutboxBatchStore,
  producer: Pick<JsonProducer, "send">,
  options: { batch_max: number; crashes: CrashHook; topic_roles?: Readonly<Record<string, string>> },
): Promise<number> {
  const rows = await store.oldest(options.batch_max);
  if (rows.length === 0) return 0;
  await producer.send(rows.map((row) => messageOf(row, options.topic_roles)));
  options.crashes.reached("after_outbox_send");
  await store.remove(rows.map((r) => r.id));
  return rows.length;
}

export interface OutboxRow {
  id: string;
  topic: string;
  key: string;
  payload: unknown;
  traceparent: string | null;
}

/** Each row's message continues the trace of the step that wrote it, not one of the batch's. */
function messageOf(row: OutboxRow, roles: Readonly<Record<string, string>> = {}): OutgoingMessage {
  const topic = row.topic.startsWith("@") ? roles[row.topic.slice(1)] : row.topic;
  // A role nobody mapped is a wiring bug: failing the batch keeps the row until it is fixed.
  if (topic === undefined)
    throw new Error(`invariant: outbox row ${row.id} names unknown topic ${row.topic}`);
  const message = { topic, key: row.key, value: row.payload };
  if (row.traceparent === null) return message;
  return { ...message, headers: injectKafkaHeaders({}, contextFromRow(row.traceparent)) };
}
