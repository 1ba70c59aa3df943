/**
 * The dead letters, open and replayed, for this service's /metrics. Dead letters live on the
 * dead-letter topic for good, and `npm run dead-letters -- replay` marks each replay there
 * (DeadLetterReplayed), so the topic alone says what is open. A consumer of its own reads it from
 * the start and keeps counts per origin topic. Its group is one per process, so that every copy
 * of the service counts every letter (a shared group would split them between copies).
 */
import { randomUUID } from "node:crypto";
import { deadLetterTopicEntrySchema, type TopicNames } from "#packages/contracts/messages.ts";
import { deadLetterTallyGroupPrefix } from "#packages/kafka/access.ts";
import { type KafkaSasl, startBatchConsumer } from "#packages/kafka/index.ts";
import type { Logger } from "#packages/log/index.ts";
import type { DeadLetterRow } from "#packages/metrics/index.ts";

/**
 * How long the first read of the whole topic is given before the counts are shown. Dead letters
 * are few (each one is a message a consumer gave up on): the topic is read in well under this.
 */
const CATCH_UP_MS = 15_000;
/** Open letters remembered (their ids, to match replay markers); past it, further letters are counted open for good. */
const OPEN_IDS_MAX = 100_000;

export interface DeadLetterTally {
  /**
   * The counts by origin topic. None for CATCH_UP_MS after the tally starts, and a throw while
   * the topic cannot be read: the scrape then leaves the gauges out, rather than show a
   * restarted process's partial count (which would read as letters opening).
   */
  rows(): Promise<DeadLetterRow[]>;
  stop(): Promise<void>;
}

export function startDeadLetterTally(options: {
  brokers: string[];
  sasl: KafkaSasl;
  topic_prefix: string;
  topics: TopicNames;
  logger: Logger;
}): DeadLetterTally {
  const t = options.topics;
  // The topics letters come from, shown at 0 before their first letter.
  const counts = new Map<string, DeadLetterRow>(
    [t.commands, t.events].map((topic) => [topic, { topic, open: 0, replayed: 0 }]),
  );
  const open = new Map<string, DeadLetterRow>();
  const consumer = startBatchConsumer({
    brokers: options.brokers,
    sasl: options.sasl,
    group_id: `${deadLetterTallyGroupPrefix(options.topic_prefix)}${randomUUID()}`,
    client_id: "dead-letter-tally",
    topics: [t.deadLetters],
    logger: options.logger,
    batch_max: 500,
    handleBatch: async (messages) => {
      for (const message of messages) count(message.value);
    },
  });

  function count(value: string): void {
    let parsed: ReturnType<typeof deadLetterTopicEntrySchema.safeParse>;
    try {
      parsed = deadLetterTopicEntrySchema.safeParse(JSON.parse(value));
    } catch {
      return;
    }
    if (!parsed.success) return;
    const entry = parsed.data;
    if (entry.type === "DeadLetter") {
      const row = counts.get(entry.origin.topic);
      // A letter from a topic this system does not have would be a forgery: not a label value.
      if (row === undefined || open.has(entry.message_id)) return;
      row.open += 1;
      if (open.size < OPEN_IDS_MAX) open.set(entry.message_id, row);
      return;
    }
    // A marker follows its letter on the same partition (same key), so the letter is known.
    const row = open.get(entry.letter_id);
    if (row === undefined) return;
    open.delete(entry.letter_id);
    row.open -= 1;
    row.replayed += 1;
  }

  const started_at = Date.now();
  return {
    async rows() {
      // Still reading: no figure yet (not a failure of the scrape).
      if (Date.now() - started_at < CATCH_UP_MS) return [];
      if (!consumer.isRunning()) throw new Error("the dead-letter topic is not being read");
      return [...counts.values()].map((row) => ({ ...row }));
    },
    stop: () => consumer.stop(),
  };
}
