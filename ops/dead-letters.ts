/**
 * `npm run dead-letters -- list | replay <letter id> | replay --all`
 *
 * Dead letters are messages a consumer gave up on after bounded retries (or could not read at
 * all). They stay on the dead-letter topic for good; this tool lists them and sends one or all
 * back to the topic they came from, unchanged, keyed as before. Consumers are idempotent, so a
 * replay is safe even if the original was applied after all. Each replay is recorded on the
 * dead-letter topic as a DeadLetterReplayed marker, so the list shows what is still open.
 */
import { randomUUID } from "node:crypto";
import { Consumer, type SASLOptions, stringDeserializers } from "@platformatic/kafka";
import { engineDefaults, splitList } from "#packages/config/index.ts";
import { type DeadLetter, deadLetterTopicEntrySchema, topicNames } from "#packages/contracts/messages.ts";
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
        const parsed = deadLetterTopicEntrySchema.safeParse(JSON.parse(message.value ?? "null"));
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

/**
 * Only refused commands go back: the operator may write transfer.commands, but transfer events
 * come only from the record writer (the broker's ACLs refuse anyone else), and an event that
 * transaction-service could not read or place would be refused the same way again.
 */
export function isReplayable(options: DeadLetterOptions, entry: DeadLetterEntry): boolean {
  return entry.letter.origin.topic === topicNames(options.topic_prefix).commands;
}

export async function replayDeadLetters(
  options: DeadLetterOptions,
  entries: DeadLetterEntry[],
): Promise<number> {
  const topic = topicNames(options.topic_prefix).deadLetters;
  const refused = entries.filter((entry) => !isReplayable(options, entry));
  if (refused.length > 0) {
    const ids = refused.map((e) => `${e.letter.message_id} (from ${e.letter.origin.topic})`).join(", ");
    throw new Error(
      `only dead letters from ${topicNames(options.topic_prefix).commands} can be replayed: ${ids}`,
    );
  }
  const producer = createProducer({
    brokers: options.brokers,
    sasl: options.sasl,
    client_id: "dead-letters",
  });
  try {
    for (const { letter } of entries) {
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
    }
    return entries.length;
  } finally {
    await producer.close();
  }
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
    const open = entries.filter((e) => e.replayed_at === null);
    const replayable = open.filter((e) => isReplayable(options, e));
    console.log(`replayed ${await replayDeadLetters(options, replayable)} open dead letters`);
    if (replayable.length < open.length) {
      console.log(
        `left ${open.length - replayable.length} open dead letters of other topics (not replayable)`,
      );
    }
  } else if (command === "replay" && target !== undefined) {
    const entry = entries.find((e) => e.letter.message_id === target);
    if (!entry) {
      console.error(`no dead letter ${target}`);
      process.exit(2);
    }
    if (!isReplayable(options, entry)) {
      console.error(
        `dead letter ${target} came from ${entry.letter.origin.topic}; only commands can be replayed`,
      );
      process.exit(2);
    }
    await replayDeadLetters(options, [entry]);
    console.log(`replayed ${target} to ${entry.letter.origin.topic}`);
  } else {
    console.error("usage: dead-letters list | replay <letter id> | replay --all");
    process.exit(2);
  }
  process.exit(0);
}
