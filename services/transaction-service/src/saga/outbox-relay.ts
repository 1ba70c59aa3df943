/**
 * The transactional outbox relay: moves committed outbox rows to Kafka, oldest first, in
 * bounded batches, deleting them only after the broker acknowledged them (acks=all). A crash
 * between the send and the delete re-sends the batch: consumers are idempotent. Row locks with
 * SKIP LOCKED let several instances relay side by side without sending a row twice at once.
 */
import { randomUUID } from "node:crypto";
import { RECORD_PACK_MAX, traceparentSchema } from "#packages/contracts/messages.ts";
import type { JsonProducer, OutgoingMessage } from "#packages/kafka/index.ts";
import type { Logger } from "#packages/log/index.ts";
import { type Pool, withTransaction } from "#packages/pg/index.ts";
import { assert } from "#packages/runtime/assert.ts";
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
  /** How long rows may gather after a wake before a round reads them (see runLoop). */
  gather_ms?: number;
  crashes?: CrashHook;
  /** Topics named by role in rows the database writes itself ('@commands'), mapped to real names. */
  topic_roles?: Readonly<Record<string, string>>;
}): OutboxRelay {
  const crashes = options.crashes ?? noCrashes;
  const stop = new AbortController();

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

  const loop = runLoop({
    signal: stop.signal,
    idle_ms: options.idle_poll_ms,
    gather_ms: options.gather_ms ?? 0,
    onError: (error, failures) =>
      options.logger.warn({ err: error, failures }, "outbox relay failed; retrying"),
    // A full batch means more may be waiting; a partial one emptied the outbox as of its read,
    // and any commit since then has called wake(), which runs the loop again at once.
    tick: async () => roundAfter(await relayOnce(), options.batch_max),
  });

  return {
    wake: loop.wake,
    async stop() {
      stop.abort();
      await loop.done;
    },
  };
}

/**
 * A full batch means more may be waiting (busy: look again at once); a partial one emptied the
 * outbox as of its read (idle). A commit during the batch woke the loop, which looks again too.
 */
export function roundAfter(sent: number, batch_max: number): "busy" | "idle" {
  return sent >= batch_max ? "busy" : "idle";
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
  await producer.send(messagesOf(rows, options.topic_roles));
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

/**
 * The rows' messages, in order, with the RecordTransfer commands of one topic packed into
 * RecordTransfers messages of at most RECORD_PACK_MAX: the records a relay round finds (a
 * disbursement's items moving in step, or transfers of their own committed side by side) cost one
 * message, one fetch and one answer, not one each. A pack's headers carry its first row's trace;
 * a pack of several traces also lists each row's, so every transfer's trace goes on. A record
 * alone in its round keeps its own message.
 */
export function messagesOf(rows: readonly OutboxRow[], roles: Readonly<Record<string, string>> = {}) {
  const groups: Array<{
    message: OutgoingMessage;
    snapshots: unknown[];
    traceparents: Array<string | null>;
  }> = [];
  const open = new Map<string, (typeof groups)[number]>();
  for (const row of rows) {
    const payload = row.payload as { type?: unknown; snapshot?: unknown } | null;
    if (payload?.type !== "RecordTransfer") {
      groups.push({ message: messageOf(row, roles), snapshots: [], traceparents: [] });
      continue;
    }
    // A pack's message (topic, key, trace headers) is its first row's: only that row's is made.
    let group = open.get(row.topic);
    if (group === undefined || group.snapshots.length >= RECORD_PACK_MAX) {
      group = { message: messageOf(row, roles), snapshots: [], traceparents: [] };
      groups.push(group);
      open.set(row.topic, group);
    }
    group.snapshots.push(payload.snapshot);
    // A context the message could not carry is dropped rather than failing the whole pack.
    group.traceparents.push(traceparentSchema.safeParse(row.traceparent).success ? row.traceparent : null);
  }
  return groups.map(({ message, snapshots, traceparents }) => {
    if (snapshots.length <= 1) return message;
    const value = { type: "RecordTransfers", message_id: randomUUID(), snapshots };
    const trace_id = traceIdOf(traceparents[0] ?? null);
    const oneTrace = traceparents.every((t) => traceIdOf(t) === trace_id);
    return { ...message, value: oneTrace ? value : { ...value, traceparents } };
  });
}

/** The trace id of a stored traceparent (version-traceid-spanid-flags), or "" without one. */
function traceIdOf(traceparent: string | null): string {
  return traceparent?.split("-")[1] ?? "";
}

/** Each row's message continues the trace of the step that wrote it, not one of the batch's. */
function messageOf(row: OutboxRow, roles: Readonly<Record<string, string>> = {}): OutgoingMessage {
  const topic = row.topic.startsWith("@") ? roles[row.topic.slice(1)] : row.topic;
  // A role nobody mapped is a wiring bug: failing the batch keeps the row until it is fixed.
  assert(topic !== undefined, `outbox row ${row.id} names unknown topic ${row.topic}`);
  const message = { topic, key: row.key, value: row.payload };
  if (row.traceparent === null) return message;
  return { ...message, headers: injectKafkaHeaders({}, contextFromRow(row.traceparent)) };
}
