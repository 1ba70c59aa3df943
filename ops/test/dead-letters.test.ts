import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, it } from "node:test";
import { type DeadLetterEntry, isReplayable, replayDeadLetters } from "../dead-letters.ts";

// Nothing listens there: a replay that got as far as the broker would fail differently.
const options = { brokers: ["127.0.0.1:9"], sasl: undefined, topic_prefix: "test." };

function letterFrom(topic: string): DeadLetterEntry {
  return {
    replayed_at: null,
    letter: {
      type: "DeadLetter",
      message_id: randomUUID(),
      failed_at: new Date().toISOString(),
      reason: "unreadable",
      attempts: 1,
      origin: { service: "transaction-service", topic, partition: 0, offset: "7", key: null },
      value: "{}",
    },
  };
}

describe("dead-letter replay", () => {
  it("replays refused commands only: transfer events are the record writer's to write", async () => {
    assert.equal(isReplayable(options, letterFrom("test.transfer.commands")), true);
    const event = letterFrom("test.transfer.events");
    assert.equal(isReplayable(options, event), false);
    await assert.rejects(
      replayDeadLetters(options, [letterFrom("test.transfer.commands"), event]),
      /only dead letters from test\.transfer\.commands can be replayed/,
    );
  });
});
