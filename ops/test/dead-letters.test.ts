import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, it } from "node:test";
import type { DeadLetter } from "#packages/contracts/messages.ts";
import { whyNotReplayable } from "../dead-letters.ts";

function letterFrom(topic: string, value: string): DeadLetter {
  return {
    type: "DeadLetter",
    message_id: randomUUID(),
    failed_at: new Date().toISOString(),
    reason: "unreadable",
    attempts: 1,
    origin: { service: "transaction-service", topic, partition: 0, offset: "7", key: null },
    value,
  };
}

const command = JSON.stringify({
  type: "RecordTransfer",
  message_id: randomUUID(),
  snapshot: {
    id: randomUUID(),
    amount: 5,
    source_user_id: 1,
    dest_user_id: 2,
    source_init_bal: 10,
    dest_init_bal: null,
    status: "PENDING",
    failure_reason: null,
    created_at: new Date().toISOString(),
    updated_at: new Date().toISOString(),
  },
});

describe("dead-letter replay", () => {
  it("replays refused commands only: transfer events are the record writer's to write", () => {
    assert.equal(whyNotReplayable(letterFrom("test.transfer.commands", command), "test."), null);
    assert.match(
      whyNotReplayable(letterFrom("test.transfer.events", "{}"), "test.") ?? "",
      /only letters from test\.transfer\.commands are replayed/,
    );
  });

  it("names what is wrong with a command letter that cannot go back", () => {
    assert.equal(
      whyNotReplayable(letterFrom("test.transfer.commands", "{not json"), "test."),
      "value is not JSON",
    );
    assert.match(
      whyNotReplayable(letterFrom("test.transfer.commands", '{"type":"RecordTransfer"}'), "test.") ?? "",
      /not a valid message/,
    );
  });

  it("replays a refused batch record command as it does a transfer's", () => {
    const now = new Date().toISOString();
    const snapshot = {
      id: randomUUID(),
      version: 3,
      status: "PENDING",
      reference: null,
      source_user_id: 1,
      item_count: 2,
      total_amount: 300,
      counts: { pending: 1, completed: 1, failed: 0 },
      amount_completed: 100,
      amount_refunded: 0,
      failure_reason: null,
      created_at: now,
      updated_at: now,
    };
    const batch = (s: unknown) =>
      JSON.stringify({ type: "RecordDisbursement", message_id: randomUUID(), snapshot: s });
    assert.equal(whyNotReplayable(letterFrom("test.transfer.commands", batch(snapshot)), "test."), null);
    assert.match(
      whyNotReplayable(letterFrom("test.transfer.commands", batch({ ...snapshot, version: 0 })), "test.") ??
        "",
      /not a valid message/,
    );
  });
});
