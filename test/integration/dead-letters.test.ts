/**
 * Dead letters: a record the writer refuses for good lands on the dead-letter topic with its
 * reason and origin, the saga refunds, and the operator tool lists the letter and replays it
 * (harmlessly: the writer is idempotent and records only move forward).
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { Consumer, stringDeserializers } from "@platformatic/kafka";
import { type DeadLetter, topicNames } from "#packages/contracts/messages.ts";
import { createProducer, deadLetterFor } from "#packages/kafka/index.ts";
import { type DeadLetterOptions, listDeadLetters, replayDeadLetters } from "../../ops/dead-letters.ts";
import { kafkaPasswordVariable, operatorKafkaSasl } from "../../packages/kafka/access.ts";
import {
  asAdmin,
  balanceOf,
  call,
  createUser,
  internalUrls,
  recordIn,
  settled,
  transfer,
  urls,
} from "./api.ts";
import { scrapeSample } from "./scrape.ts";

const options: DeadLetterOptions = {
  brokers: (process.env.TEST_KAFKA_BROKERS ?? "127.0.0.1:59092").split(","),
  sasl: operatorKafkaSasl(),
  topic_prefix: process.env.KAFKA_TOPIC_PREFIX ?? "test.",
};

/** The gauge's value for letters from transfer.commands on the record writer's /metrics (undefined while left out). */
function deadLetterGauge(
  name: "dps_dead_letters_open" | "dps_dead_letters_replayed",
): Promise<number | undefined> {
  return scrapeSample(internalUrls.command, name, { topic: `${options.topic_prefix}transfer.commands` });
}

/** Waits until the gauge satisfies `ok` (the tally reads the dead-letter topic as letters arrive). */
async function gaugeUntil(
  name: "dps_dead_letters_open" | "dps_dead_letters_replayed",
  ok: (value: number) => boolean,
): Promise<number> {
  const deadline = Date.now() + GAUGE_TIMEOUT_MS;
  for (;;) {
    const value = await deadLetterGauge(name);
    if (value !== undefined && ok(value)) return value;
    if (Date.now() > deadline) assert.fail(`${name} is ${value} after ${GAUGE_TIMEOUT_MS} ms`);
    await sleep(250);
  }
}

/** Generous: the tally shows nothing for its first 15 s, and the machine is shared. */
const GAUGE_TIMEOUT_MS = 60_000;

/** The record writer's answers (alone or in a pack's) for `transfer_id` with `status`, read to the end as the broker's admin. */
async function recordedEvents(transfer_id: string, status: string): Promise<number> {
  const password = process.env[kafkaPasswordVariable("admin")];
  const consumer = new Consumer({
    clientId: "dead-letters-test",
    groupId: `dead-letters-test-${crypto.randomUUID()}`,
    bootstrapBrokers: options.brokers,
    ...(password === undefined ? {} : { sasl: { mechanism: "SCRAM-SHA-512", username: "admin", password } }),
    deserializers: stringDeserializers,
    timeout: 10_000,
  });
  let seen = 0;
  try {
    const stream = await consumer.consume({
      topics: [topicNames(options.topic_prefix).events],
      mode: "earliest",
      autocommit: false,
      maxWaitTime: 200,
    });
    // The topic is read to its end when nothing more comes for a while.
    await new Promise<void>((resolve, reject) => {
      let idle = setTimeout(resolve, 3_000);
      stream.on("data", (message) => {
        clearTimeout(idle);
        idle = setTimeout(resolve, 1_000);
        const event = JSON.parse(message.value ?? "null") as {
          type?: string;
          transfer_id?: string;
          status?: string;
          records?: Array<{ transfer_id?: string; status?: string }>;
        };
        // A command answered alone, or within a pack's answer (TransfersRecorded).
        const records = event?.type === "TransfersRecorded" ? (event.records ?? []) : [event ?? {}];
        if (event?.type !== "TransferRecorded" && event?.type !== "TransfersRecorded") return;
        for (const r of records) if (r.transfer_id === transfer_id && r.status === status) seen += 1;
      });
      stream.on("error", reject);
    });
    await stream.close();
  } finally {
    await consumer.close(true).catch(() => {});
  }
  return seen;
}

/** Polls until the writer has answered `count` such commands; fails after `timeout_ms`. */
async function awaitRecordedEvents(transfer_id: string, status: string, count: number, timeout_ms: number) {
  const deadline = Date.now() + timeout_ms;
  let seen = await recordedEvents(transfer_id, status);
  while (seen < count && Date.now() < deadline) {
    await sleep(500);
    seen = await recordedEvents(transfer_id, status);
  }
  assert.ok(
    seen >= count,
    `${seen} of ${count} TransferRecorded ${status} for ${transfer_id} within ${timeout_ms} ms`,
  );
}

/** Polls the dead letters until one names the transfer (its origin key); undefined after `timeout_ms`. */
async function letterFor(id: string, timeout_ms: number) {
  const deadline = Date.now() + timeout_ms;
  for (;;) {
    const letter = (await listDeadLetters(options)).find((entry) => entry.letter.origin.key === id);
    if (letter !== undefined || Date.now() > deadline) return letter;
    await sleep(500);
  }
}

describe("dead letters", () => {
  it("keeps a refused record with its reason and origin, and replays it on demand", async () => {
    // This file's tests alone replay letters, one after the other: only new letters move these.
    const open_before = await gaugeUntil("dps_dead_letters_open", () => true);
    const replayed_before = await gaugeUntil("dps_dead_letters_replayed", () => true);
    const a = await createUser(2_000);
    const b = await createUser(0);
    const fault = await call("PUT", `${internalUrls.command}/ops/faults`, {
      body: { reject_records_for_source_user_ids: [a.id] },
      headers: asAdmin(),
    });
    assert.equal(fault.status, 200);
    let id: string;
    let letter: Awaited<ReturnType<typeof letterFor>>;
    try {
      const answer = await transfer(
        { source_user_id: a.id, dest_user_id: b.id, amount: 700 },
        undefined,
        a.token,
      );
      assert.equal(answer.status, 201);
      id = answer.body.data.transaction.id;
      // The money moved: a record refused for good is an operator's matter, never undone money.
      assert.equal((await settled(id, a.token)).status, "COMPLETED");
      // The refused COMPLETED command reaches the dead letters after the client saw the transfer
      // final (the fault stays on until then).
      letter = await letterFor(id, 60_000);
    } finally {
      await call("PUT", `${internalUrls.command}/ops/faults`, {
        body: { reject_records_for_source_user_ids: [] },
        headers: asAdmin(),
      });
    }
    assert.equal(await balanceOf(a.id), 1_300);
    assert.ok(letter, "the refused command is on the dead-letter topic");
    assert.equal(letter.replayed_at, null);
    assert.match(letter.letter.reason, /refused/);
    assert.equal(letter.letter.origin.service, "transaction-command-service");
    assert.equal(letter.letter.origin.topic, `${options.topic_prefix}transfer.commands`);
    assert.equal(JSON.parse(letter.letter.value).snapshot.id, id);
    assert.equal(JSON.parse(letter.letter.value).snapshot.status, "COMPLETED");
    const missing = await call("GET", `${urls.query}/transactions/${id}`, { headers: asAdmin() });
    assert.equal(missing.status, 404, "no record until the letter is replayed");
    await gaugeUntil("dps_dead_letters_open", (open) => open >= open_before + 1);

    assert.deepEqual(await replayDeadLetters(options, [letter]), {
      replayed: [letter.letter.message_id],
      skipped: [],
    });
    const after = (await listDeadLetters(options)).find(
      (entry) => entry.letter.message_id === letter.letter.message_id,
    );
    assert.ok(after?.replayed_at, "the replay is recorded");
    const replayed = await gaugeUntil("dps_dead_letters_replayed", (n) => n >= replayed_before + 1);
    assert.equal(replayed, replayed_before + 1, "one replay, counted once");
    // The writer takes the replayed command (it answers it on the events topic): the record is
    // written, and no money moves.
    await awaitRecordedEvents(id, "COMPLETED", 1, 90_000);
    const record = await recordIn(id, "COMPLETED");
    assert.equal(record.amount, 700);
    assert.equal(await balanceOf(a.id), 1_300);
    assert.equal(await balanceOf(b.id), 700);
  });

  it("replay --all skips and reports letters that cannot be replayed, and replays the rest", async () => {
    const topics = topicNames(options.topic_prefix);
    // A completed transfer: its record command, sent again, changes nothing (records only move
    // forward and the saga is final), so it is the harmless letter that must be replayed.
    const a = await createUser(1_000);
    const b = await createUser(0);
    const made = await transfer(
      { source_user_id: a.id, dest_user_id: b.id, amount: 100 },
      undefined,
      a.token,
    );
    assert.equal(made.status, 201);
    const transfer_id: string = made.body.data.transaction.id;
    assert.equal((await settled(transfer_id, a.token)).status, "COMPLETED");
    // Its final record (written after the client sees it final).
    const record = await recordIn(transfer_id, "COMPLETED");
    const command = { type: "RecordTransfer", message_id: crypto.randomUUID(), snapshot: record };
    const event = {
      type: "TransferRecordRejected",
      message_id: crypto.randomUUID(),
      transfer_id,
      status: "PENDING",
      reason: "test letter",
    };
    // Letters as consumers write them for what they could not take: two commands (not JSON, and
    // JSON that is not a command), an event (only the record writer may write events), then a
    // valid command.
    const origins = [
      { topic: topics.commands, value: "{not json" },
      { topic: topics.commands, value: JSON.stringify({ type: "RecordTransfer" }) },
      { topic: topics.events, value: JSON.stringify(event) },
      { topic: topics.commands, value: JSON.stringify(command) },
    ];
    const letters = origins.map(({ topic, value }, i) => {
      const origin = { topic, partition: 0, offset: BigInt(i), key: transfer_id, value };
      return deadLetterFor(topics.deadLetters, "test", origin, "test letter", 1);
    });
    const producer = createProducer({
      brokers: options.brokers,
      sasl: options.sasl,
      client_id: "dead-letters-test",
    });
    try {
      await producer.send(letters);
    } finally {
      await producer.close();
    }
    const [unreadable, notACommand, anEvent, good] = letters.map((l) => (l.value as DeadLetter).message_id);

    const run = await promisify(execFile)(
      process.execPath,
      [fileURLToPath(new URL("../../ops/dead-letters.ts", import.meta.url)), "replay", "--all"],
      {
        env: {
          ...process.env,
          KAFKA_BROKERS: options.brokers.join(","),
          KAFKA_TOPIC_PREFIX: options.topic_prefix,
        },
        timeout: 120_000,
      },
    );
    assert.match(run.stderr, new RegExp(`skipped ${unreadable}: value is not JSON`));
    assert.match(run.stderr, new RegExp(`skipped ${notACommand}: value is not a valid message`));
    assert.match(run.stderr, new RegExp(`skipped ${anEvent}: came from ${topics.events}`));
    assert.match(run.stdout, /replayed \d+, skipped \d+/);

    const after = new Map((await listDeadLetters(options)).map((e) => [e.letter.message_id, e.replayed_at]));
    assert.equal(after.get(unreadable as string), null, "a letter that cannot be replayed stays open");
    assert.equal(after.get(notACommand as string), null);
    assert.equal(after.get(anEvent as string), null);
    assert.ok(after.get(good as string), "the replayable letter behind them was replayed");
    // The writer took it: a second answer to the transfer's COMPLETED command (the first is the saga's).
    await awaitRecordedEvents(transfer_id, "COMPLETED", 2, 90_000);
    assert.equal((await settled(transfer_id, a.token)).status, "COMPLETED");
    assert.equal(await balanceOf(b.id), 100);
  });
});
