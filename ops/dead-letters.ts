/**
 * `npm run dead-letters -- list | replay <letter id> | replay --all`
 *
 * Dead letters are messages a consumer gave up on after bounded retries (or could not read at
 * all). They stay on the dead-letter topic for good; this tool lists them and sends one or all
 * back to the topic they came from, unchanged, keyed as before. Consumers are idempotent, so a
 * replay is safe even if the original was applied after all. A letter whose value its topic's
 * consumer cannot accept (not JSON, not a valid message) is skipped and reported, never sent. Each replay is recorded on the
 * dead-letter topic as a DeadLetterReplayed marker, so the list shows what is still open.
 */
import { randomUUID } from "node:crypto";
import { Consumer, type SASLOptions, stringDeserializers } from "@platformatic/kafka";
import { engineDefaults, splitList } from "#packages/config/index.ts";
import {
  type DeadLetter,
  deadLetterTopicEntrySchema,
  recordCommandSchema,
  topicNames,
} from "#packages/contracts/messages.ts";
import { deadLetterReaderGroupPrefix, operatorKafkaSasl } from "#packages/kafka/access.ts";
import { createProducer } from "#packages/kafka/index.ts";

export interface DeadLetterEntry {
  letter: DeadLetter;
  replayed_at: string | null;
}

export interface DeadLetterOptions {
  brokers: string[];
  /** The operator's credentials (undefined against a broker without SASL). */
  sasl: SASLOptions | undefined;
  topic_prefix: string;
  /** Stop reading after this long without a new message. */
  idle_ms?: number;
}

export function deadLetterOptionsFromEnv(env: NodeJS.ProcessEnv = process.env): DeadLetterOptions {
  return {
    brokers: splitList(env.KAFKA_BROKERS ?? engineDefaults.KAFKA_BROKERS),
    sasl: operatorKafkaSasl(env),
    topic_prefix: env.KAFKA_TOPIC_PREFIX ?? "",
  };
}

/** The parsed value, or undefined when it is not JSON (an entry nobody can read is passed over). */
function parseJson(value: string): unknown {
  try {
    return JSON.parse(value);
  } catch {
    return undefined;
  }
}

/** Read the whole dead-letter topic (a private consumer group, from the beginning). */
export async function listDeadLetters(options: DeadLetterOptions): Promise<DeadLetterEntry[]> {
  const topic = topicNames(options.topic_prefix).deadLetters;
  const consumer = new Consumer({
    clientId: "dead-letters",
    groupId: `${deadLetterReaderGroupPrefix}${randomUUID()}`,
    bootstrapBrokers: options.brokers,
    ...(options.sasl === undefined ? {} : { sasl: options.sasl }),
    deserializers: stringDeserializers,
    timeout: 10_000,
  });
  const letters = new Map<string, DeadLetterEntry>();
  const replays = new Map<string, string>();
  try {
    const stream = await consumer.consume({
      topics: [topic],
      mode: "earliest",
      autocommit: false,
      maxWaitTime: 200,
    });
    await new Promise<void>((resolve, reject) => {
      let idle = setTimeout(resolve, options.idle_ms ?? 3_000);
      stream.on("data", (message) => {
        clearTimeout(idle);
        idle = setTimeout(resolve, options.idle_ms ?? 1_000);
        const parsed = deadLetterTopicEntrySchema.safeParse(parseJson(message.value ?? "null"));
        if (!parsed.success) return;
        if (parsed.data.type === "DeadLetter")
          letters.set(parsed.data.message_id, { letter: parsed.data, replayed_at: null });
        else replays.set(parsed.data.letter_id, parsed.data.replayed_at);
      });
      stream.on("error", reject);
    });
    await stream.close();
  } finally {
    await consumer.close(true).catch(() => {});
  }
  for (const [letter_id, at] of replays) {
    const entry = letters.get(letter_id);
    if (entry) entry.replayed_at = at;
  }
  return [...letters.values()];
}

export interface ReplayReport {
  /** Letter ids sent back to their topic. */
  replayed: string[];
  /** Letters left open, with why: replaying them could only make another dead letter. */
  skipped: Array<{ letter_id: string; reason: string }>;
}

/** Why a letter cannot be replayed (its value is not a message its origin topic's consumer accepts), or null. */
export function whyNotReplayable(letter: DeadLetter, topic_prefix: string): string | null {
  // Only refused commands go back: the operator may write transfer.commands, but transfer events
  // come only from the record writer (the broker's ACLs refuse anyone else), and an event that
  // transaction-service could not read or place would be refused the same way again.
  const commands = topicNames(topic_prefix).commands;
  if (letter.origin.topic !== commands) {
    return `came from ${letter.origin.topic}; only letters from ${commands} are replayed`;
  }
  let value: unknown;
  try {
    value = JSON.parse(letter.value);
  } catch {
    return "value is not JSON";
  }
  const parsed = recordCommandSchema.safeParse(value);
  return parsed.success ? null : `value is not a valid message for ${letter.origin.topic}`;
}

/**
 * Send the letters back to their topics, each followed by its DeadLetterReplayed marker. A
 * letter that cannot be replayed is skipped and reported, and the others still go.
 */
export async function replayDeadLetters(
  options: DeadLetterOptions,
  entries: DeadLetterEntry[],
): Promise<ReplayReport> {
  const topic = topicNames(options.topic_prefix).deadLetters;
  const report: ReplayReport = { replayed: [], skipped: [] };
  const producer = createProducer({
    brokers: options.brokers,
    sasl: options.sasl,
    client_id: "dead-letters",
  });
  try {
    for (const { letter } of entries) {
      const reason = whyNotReplayable(letter, options.topic_prefix);
      if (reason !== null) {
        report.skipped.push({ letter_id: letter.message_id, reason });
        continue;
      }
      // The original message, unchanged, back where it came from; then the marker.
      await producer.send([
        { topic: letter.origin.topic, key: letter.origin.key ?? "", value: JSON.parse(letter.value) },
      ]);
      await producer.send([
        {
          topic,
          key: letter.origin.key ?? "",
          value: {
            type: "DeadLetterReplayed",
            message_id: randomUUID(),
            letter_id: letter.message_id,
            replayed_at: new Date().toISOString(),
          },
        },
      ]);
      report.replayed.push(letter.message_id);
    }
    return report;
  } finally {
    await producer.close();
  }
}

function printReport(report: ReplayReport): void {
  for (const skip of report.skipped) console.error(`skipped ${skip.letter_id}: ${skip.reason}`);
  console.log(`replayed ${report.replayed.length}, skipped ${report.skipped.length}`);
}

function describe(entry: DeadLetterEntry): string {
  const l = entry.letter;
  const state = entry.replayed_at ? `replayed ${entry.replayed_at}` : "open";
  return `${l.message_id}  ${l.failed_at}  ${l.origin.service} ${l.origin.topic}[${l.origin.partition}]@${l.origin.offset} key=${l.origin.key ?? "-"}  attempts=${l.attempts}  ${state}\n    reason: ${l.reason}`;
}

if (import.meta.main) {
  const [command = "list", target] = process.argv.slice(2);
  const options = deadLetterOptionsFromEnv();
  const entries = await listDeadLetters(options);
  if (command === "list") {
    const open = entries.filter((e) => e.replayed_at === null).length;
    console.log(
      `${entries.length} dead letters (${open} open) on ${topicNames(options.topic_prefix).deadLetters}`,
    );
    for (const entry of entries) console.log(describe(entry));
  } else if (command === "replay" && target === "--all") {
    const report = await replayDeadLetters(
      options,
      entries.filter((e) => e.replayed_at === null),
    );
    printReport(report);
  } else if (command === "replay" && target !== undefined) {
    const entry = entries.find((e) => e.letter.message_id === target);
    if (!entry) {
      console.error(`no dead letter ${target}`);
      process.exit(2);
    }
    const report = await replayDeadLetters(options, [entry]);
    printReport(report);
    if (report.skipped.length > 0) process.exit(1);
  } else {
    console.error("usage: dead-letters list | replay <letter id> | replay --all");
    process.exit(2);
  }
  process.exit(0);
}
