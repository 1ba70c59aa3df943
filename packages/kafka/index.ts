/**
 * Kafka plumbing shared by every service:
 * - one long-lived idempotent producer per process (acks=all), JSON values, string keys;
 * - topic creation at start-up (the broker refuses auto-creation, so a typo fails loudly);
 * - a batch consumer that hands a bounded batch to an idempotent handler and commits the
 *   offsets only after the handler's effects are durable. A batch whose handler throws is
 *   retried with capped exponential backoff, unless it broke an invariant (retry.ts: that
 *   message is dead-lettered at once); if the consumer itself breaks (broker restart) it is
 *   rebuilt. Delivery is at-least-once by construction.
 */

import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import {
  Admin,
  Consumer,
  type Message,
  type MessagesStream,
  ProduceAcks,
  Producer,
  type SASLOptions,
  stringDeserializers,
  stringSerializers,
} from "@platformatic/kafka";
import type { DeadLetter } from "#packages/contracts/messages.ts";
import type { Logger } from "#packages/log/index.ts";
import type { LagRow, Metrics } from "#packages/metrics/index.ts";
import { assert } from "#packages/runtime/assert.ts";
import { backoff_ms, withTimeout } from "#packages/runtime/index.ts";
import { runLoop } from "#packages/runtime/loops.ts";
import type { KafkaHeaders } from "#packages/tracing/carriers.ts";
import { handleWithRetry as handleWithPolicy } from "./retry.ts";

export interface OutgoingMessage {
  topic: string;
  key: string;
  value: unknown;
  /** Kafka headers (the W3C trace context, packages/tracing/carriers.ts). */
  headers?: Record<string, string>;
}

export interface JsonProducer {
  send(messages: OutgoingMessage[]): Promise<void>;
  close(): Promise<void>;
}

/** SASL credentials for the broker (see access.ts); undefined = a plain broker without authentication. */
export type KafkaSasl = SASLOptions | undefined;

export function createProducer(options: {
  brokers: string[];
  sasl: KafkaSasl;
  client_id: string;
  timeout_ms?: number;
}): JsonProducer {
  const producer = new Producer({
    clientId: options.client_id,
    bootstrapBrokers: options.brokers,
    ...saslOption(options.sasl),
    serializers: stringSerializers,
    idempotent: true,
    acks: ProduceAcks.ALL,
    timeout: options.timeout_ms ?? 10_000,
    retries: 5,
    retryDelay: 250,
  });
  return {
    async send(messages) {
      if (messages.length === 0) return;
      await producer.send({
        messages: messages.map((m) => ({
          topic: m.topic,
          key: m.key,
          value: JSON.stringify(m.value),
          ...(m.headers === undefined ? {} : { headers: m.headers }),
        })),
      });
    },
    close: () => producer.close(),
  };
}

/** The client option for SASL, or none at all (the client rejects an explicit undefined). */
function saslOption(sasl: KafkaSasl): { sasl?: SASLOptions } {
  return sasl === undefined ? {} : { sasl };
}

/**
 * Replication of the topics a cluster of broker_count brokers gets: three copies with two in sync
 * for every acknowledged write (producers use acks=all), so one broker can die without losing an
 * acknowledged message and writes go on. A single broker can hold only one copy.
 */
export function topicReplication(broker_count: number): { replicas: number; min_insync_replicas: number } {
  assert(Number.isInteger(broker_count), "broker_count must be an integer");
  assert(broker_count >= 1, "broker_count must be at least 1");
  const replicas = Math.min(3, broker_count);
  return { replicas, min_insync_replicas: replicas >= 3 ? 2 : 1 };
}

export async function ensureTopics(options: {
  brokers: string[];
  sasl: KafkaSasl;
  topics: string[];
  partitions: number;
  logger: Logger;
}): Promise<void> {
  const admin = new Admin({
    clientId: "topic-setup",
    bootstrapBrokers: options.brokers,
    ...saslOption(options.sasl),
    timeout: 10_000,
  });
  try {
    const existing = new Set(await admin.listTopics());
    const missing = options.topics.filter((t) => !existing.has(t));
    if (missing.length === 0) return;
    try {
      const { brokers } = await admin.metadata({ topics: [] });
      const { replicas, min_insync_replicas } = topicReplication(brokers.size);
      await admin.createTopics({
        topics: missing,
        partitions: options.partitions,
        replicas,
        configs: [{ name: "min.insync.replicas", value: String(min_insync_replicas) }],
      });
      options.logger.info({ topics: missing, replicas, min_insync_replicas }, "created topics");
    } catch (error) {
      // Another instance may have created them between our list and create.
      const now = new Set(await admin.listTopics());
      if (!missing.every((t) => now.has(t))) throw error;
    }
  } finally {
    await admin.close();
  }
}

export async function pingKafka(brokers: string[], sasl: KafkaSasl): Promise<void> {
  const admin = new Admin({
    clientId: "health",
    bootstrapBrokers: brokers,
    ...saslOption(sasl),
    timeout: 2_000,
    retries: 0,
  });
  try {
    await admin.listTopics();
  } finally {
    await admin.close().catch(() => {});
  }
}

export interface ConsumedMessage {
  topic: string;
  partition: number;
  offset: bigint;
  key: string | null;
  value: string;
  /** The message's headers (the W3C trace context, among others). */
  headers?: KafkaHeaders | undefined;
}

/** The dead letter for a consumed message a service gives up on: the original value, why, and where from. */
export function deadLetterFor(
  deadLetterTopic: string,
  service: string,
  message: ConsumedMessage,
  reason: string,
  attempts: number,
): OutgoingMessage {
  const letter: DeadLetter = {
    type: "DeadLetter",
    message_id: randomUUID(),
    failed_at: new Date().toISOString(),
    reason,
    attempts,
    origin: {
      service,
      topic: message.topic,
      partition: message.partition,
      offset: message.offset.toString(),
      key: message.key,
    },
    value: message.value,
  };
  return { topic: deadLetterTopic, key: message.key ?? "", value: letter };
}

/**
 * How fast a group notices a member that died without leaving (kill -9, a lost machine): the
 * coordinator reassigns its partitions only once its session times out. Neither static membership
 * nor cooperative rebalancing shortens that wait (both still wait for the session to expire); a
 * short session does. Six heartbeats per session leave room for a busy event loop on a loaded box.
 * The broker's group.min.session.timeout.ms must allow it (scripts/stack/engines/kafka.ts).
 */
export const CONSUMER_SESSION_TIMEOUT_MS = 3_000;
export const CONSUMER_HEARTBEAT_INTERVAL_MS = 500;
/**
 * How long the broker holds a fetch that finds nothing. A fetch is answered as soon as one byte
 * arrives (minBytes 1), so this adds no latency: it only sets how often an idle consumer asks
 * again. At 50 ms each idle consumer cost the broker 20 fetches a second.
 */
export const CONSUMER_FETCH_WAIT_MS = 500;

export interface BatchConsumerOptions {
  brokers: string[];
  sasl: KafkaSasl;
  group_id: string;
  client_id: string;
  topics: string[];
  logger: Logger;
  /** Upper bound on messages handed to one handleBatch call. */
  batch_max: number;
  /**
   * Must be idempotent. Throwing means "nothing was lost, try the same batch again later"; throwing
   * an InvariantError means "this can never succeed" (see retry.ts).
   */
  handleBatch(messages: ConsumedMessage[]): Promise<void>;
  /** Sends a message whose handling broke an invariant to the dead letters, at once (retry.ts). */
  deadLetter?: (message: ConsumedMessage, reason: string) => Promise<void>;
  /**
   * Liveness: if the loop makes no progress at all (no batch, no retry, no idle check) for this
   * long, the process exits so that its supervisor starts it afresh. Default 120 s.
   */
  stall_exit_ms?: number;
  /** Counts each message of a batch whose offsets were committed (messages handled, by topic). */
  metrics?: Pick<Metrics, "messageHandled">;
}

export interface RunningConsumer {
  stop(): Promise<void>;
  /** True when the consumer has a live stream (used by health checks). */
  isRunning(): boolean;
  /** The lag of each partition this copy is assigned (none while it has no live consumer). */
  lag(): Promise<LagRow[]>;
}

export function startBatchConsumer(options: BatchConsumerOptions): RunningConsumer {
  assert(options.batch_max >= 1, "batch_max must be at least 1");
  assert(options.batch_max <= 10_000, "batch_max must be at most 10000");
  let stopped = false;
  let running = false;
  let consumer: Consumer<string, string, string, string> | undefined;
  const stopController = new AbortController();

  const { progress, watchdog } = startWatchdog(options, () => stopped);

  /** One consumer's life: built, consuming until it breaks (or the loop stops), then left. */
  const consumeOnce = async (round: { healthy(): void }): Promise<"busy"> => {
    try {
      consumer = newConsumer(options);
      const stream = await consumeTopics(consumer, options);
      running = true;
      round.healthy();
      options.logger.info({ group: options.group_id, topics: options.topics }, "consumer started");
      const inbox = new Inbox(stream, options.batch_max);
      let idleWithLag = 0;
      try {
        while (!stopped) {
          const batch = await inbox.next(stopController.signal, IDLE_CHECK_MS);
          progress();
          if (batch.length === 0) {
            // Nothing arrived for a while. If the group is behind on our partitions twice in a
            // row, the stream has stopped fetching (seen after broker and group upheavals):
            // rebuild the consumer rather than sit on a backlog forever.
            idleWithLag = (await hasLag(consumer, options.topics)) ? idleWithLag + 1 : 0;
            if (idleWithLag >= 2) throw new Error("consumer idle while its partitions have lag");
            continue;
          }
          idleWithLag = 0;
          await handleWithRetry(batch);
          // A commit that never answers (the coordinator moved during a broker restart) must
          // not hold the partition forever: rebuild; the batch is redelivered and is idempotent.
          await withTimeout(commitBatch(batch), COMMIT_TIMEOUT_MS, "offset commit");
          for (const m of batch) options.metrics?.messageHandled(options.group_id, m.topic, "ok");
          progress();
        }
      } finally {
        inbox.detach();
      }
    } catch (error) {
      if (stopped) return "busy";
      running = false;
      if (consumer !== undefined && !(await leaveGroup(consumer))) {
        // A consumer that could not leave stays a member of the group, heartbeating and holding
        // partitions that nobody fetches. Only a fresh process is sure to be rid of it.
        options.logger.fatal({ group: options.group_id }, "consumer could not leave its group; exiting");
        process.exit(70);
      }
      consumer = undefined;
      progress();
      throw error;
    }
    return "busy";
  };

  const handleWithRetry = async (batch: KafkaMessage[]) => {
    await handleWithPolicy(batch.map(consumedMessage), {
      handleBatch: options.handleBatch,
      deadLetter: options.deadLetter,
      logger: options.logger,
      isStopped: () => stopped,
      progress,
    });
  };

  const loop = runLoop({
    signal: stopController.signal,
    idle_ms: IDLE_CHECK_MS,
    retry_ms: (failures) => backoff_ms(failures, 500, 5_000),
    onError: (error, failures) =>
      options.logger.warn({ err: error, failures }, "consumer failed; rebuilding"),
    tick: consumeOnce,
  });
  const done = loop.done;

  return {
    isRunning: () => running,
    lag: async () =>
      consumer === undefined
        ? []
        : lagRows(options.group_id, await consumer.getLag({ topics: options.topics })),
    async stop() {
      stopped = true;
      clearInterval(watchdog);
      stopController.abort();
      await consumer?.close(true).catch(() => {});
      await done;
    },
  };
}

/**
 * The client can wedge in ways no call reports (a commit or close that never settles, a member
 * that keeps its partitions without fetching). Every loop step marks progress; a process whose
 * consumer stops progressing exits, and its supervisor restarts it with fresh consumers.
 */
function startWatchdog(
  options: BatchConsumerOptions,
  isStopped: () => boolean,
): { progress: () => void; watchdog: NodeJS.Timeout } {
  let progressAt = Date.now();
  const progress = () => {
    progressAt = Date.now();
  };
  const stall_ms = options.stall_exit_ms ?? 120_000;
  const watchdog = setInterval(() => {
    if (isStopped() || Date.now() - progressAt < stall_ms) return;
    options.logger.fatal(
      { group: options.group_id, stalled_ms: Date.now() - progressAt },
      "consumer stalled; exiting",
    );
    process.exit(70);
  }, 5_000);
  watchdog.unref();
  return { progress, watchdog };
}

function newConsumer(options: BatchConsumerOptions): Consumer<string, string, string, string> {
  return new Consumer({
    clientId: options.client_id,
    groupId: options.group_id,
    bootstrapBrokers: options.brokers,
    ...saslOption(options.sasl),
    deserializers: stringDeserializers,
    sessionTimeout: CONSUMER_SESSION_TIMEOUT_MS,
    heartbeatInterval: CONSUMER_HEARTBEAT_INTERVAL_MS,
    rebalanceTimeout: 15_000,
    timeout: 10_000,
  });
}

/** Joins the group on the topics, offsets committed by hand, at most two batches buffered. */
function consumeTopics(consumer: Consumer<string, string, string, string>, options: BatchConsumerOptions) {
  return consumer.consume({
    topics: options.topics,
    autocommit: false,
    mode: "committed",
    fallbackMode: "earliest",
    maxWaitTime: CONSUMER_FETCH_WAIT_MS,
    minBytes: 1,
    highWaterMark: options.batch_max * 2,
  });
}

function consumedMessage(m: KafkaMessage): ConsumedMessage {
  return {
    topic: m.topic,
    partition: m.partition,
    offset: m.offset,
    key: m.key ?? null,
    value: m.value ?? "",
    headers: m.headers,
  };
}

/** Commit the highest offset seen per partition, after the whole batch took effect. */
async function commitBatch(batch: Message<string, string, string, string>[]): Promise<void> {
  const last = new Map<string, Message<string, string, string, string>>();
  for (const message of batch) {
    const key = `${message.topic}:${message.partition}`;
    const seen = last.get(key);
    if (!seen || seen.offset < message.offset) last.set(key, message);
  }
  await Promise.all([...last.values()].map((m) => m.commit()));
}

type KafkaMessage = Message<string, string, string, string>;

/**
 * A bounded in-process queue fed by the stream in flowing mode. The client fetches only while
 * the stream flows, so backpressure is pause() when the queue holds two batches and resume()
 * once it has drained below one.
 */
const IDLE_CHECK_MS = 10_000;

/**
 * Close a consumer so that it really leaves its group. The client reports a failed leave (the
 * coordinator unreachable during a broker restart) by staying open, so the close is retried.
 */
async function leaveGroup(consumer: Consumer<string, string, string, string>): Promise<boolean> {
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      await withTimeout(consumer.close(true), 10_000, "consumer close");
      return true;
    } catch {
      await sleep(backoff_ms(attempt, 500, 5_000));
    }
  }
  return false;
}
const COMMIT_TIMEOUT_MS = 15_000;

/** Lag per partition; -1 is a partition this copy is not assigned, which another copy reports. */
function lagRows(group: string, lag: Map<string, bigint[]>): LagRow[] {
  return [...lag.entries()].flatMap(([topic, partitions]) =>
    partitions.flatMap((value, partition) =>
      value < 0n ? [] : [{ group, topic, partition, lag: Number(value) }],
    ),
  );
}

async function hasLag(
  consumer: Consumer<string, string, string, string>,
  topics: string[],
): Promise<boolean> {
  try {
    const lag = await withTimeout(consumer.getLag({ topics }), 5_000, "lag check");
    return [...lag.values()].some((partitions) => partitions.some((l) => l > 0n));
  } catch {
    return false; // no answer about lag is no evidence of a stall
  }
}

class Inbox {
  readonly #stream: MessagesStream<string, string, string, string>;
  readonly #max: number;
  readonly #queue: KafkaMessage[] = [];
  #failure: Error | null = null;
  #wake: (() => void) | null = null;
  readonly #onData = (message: KafkaMessage) => {
    this.#queue.push(message);
    if (this.#queue.length >= this.#max * 2) this.#stream.pause();
    this.#wake?.();
  };
  readonly #onError = (error: Error) => {
    this.#failure = error;
    this.#wake?.();
  };
  readonly #onClose = () => {
    this.#failure ??= new Error("consumer stream closed");
    this.#wake?.();
  };

  constructor(stream: MessagesStream<string, string, string, string>, max: number) {
    this.#stream = stream;
    this.#max = max;
    stream.on("data", this.#onData);
    stream.on("error", this.#onError);
    stream.on("close", this.#onClose);
  }

  /** The next batch, or an empty one when nothing arrived within idle_ms. */
  async next(signal: AbortSignal, idle_ms: number): Promise<KafkaMessage[]> {
    const idleUntil = Date.now() + idle_ms;
    while (this.#queue.length === 0) {
      if (this.#failure) throw this.#failure;
      if (signal.aborted) throw new Error("consumer stopping");
      const wait_ms = idleUntil - Date.now();
      if (wait_ms <= 0) return [];
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          this.#wake = null;
          signal.removeEventListener("abort", done);
          resolve();
        };
        const timer = setTimeout(done, wait_ms);
        this.#wake = done;
        signal.addEventListener("abort", done, { once: true });
      });
    }
    const batch = this.#queue.splice(0, this.#max);
    if (this.#stream.isPaused() && this.#queue.length < this.#max) this.#stream.resume();
    return batch;
  }

  detach(): void {
    this.#stream.off("data", this.#onData);
    this.#stream.off("error", this.#onError);
    this.#stream.off("close", this.#onClose);
  }
}
