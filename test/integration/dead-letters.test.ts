/**
 * Dead letters: a record the writer refuses for good lands on the dead-letter topic with its
 * reason and origin, the saga refunds, and the operator tool lists the letter and replays it
 * (harmlessly: the writer is idempotent and records only move forward).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { type DeadLetterOptions, listDeadLetters, replayDeadLetters } from "../../ops/dead-letters.ts";
import { asAdmin, balanceOf, call, createUser, internalUrls, settled, transfer, urls } from "./api.ts";

const options: DeadLetterOptions = {
  brokers: (process.env.TEST_KAFKA_BROKERS ?? "127.0.0.1:59092").split(","),
  topic_prefix: process.env.KAFKA_TOPIC_PREFIX ?? "test.",
};

describe("dead letters", () => {
  it("keeps a refused record with its reason and origin, and replays it on demand", async () => {
    const a = await createUser(2_000);
    const b = await createUser(0);
    const fault = await call("PUT", `${internalUrls.command}/ops/faults`, {
      body: { reject_pending_for_source_user_ids: [a.id] },
      headers: asAdmin(),
    });
    assert.equal(fault.status, 200);
    let id: string;
    try {
      const answer = await transfer(
        { source_user_id: a.id, dest_user_id: b.id, amount: 700 },
        undefined,
        a.token,
      );
      assert.equal(answer.status, 201);
      id = answer.body.data.transaction.id;
      assert.equal((await settled(id, a.token)).status, "FAILED");
    } finally {
      await call("PUT", `${internalUrls.command}/ops/faults`, {
        body: { reject_pending_for_source_user_ids: [] },
        headers: asAdmin(),
      });
    }
    assert.equal(await balanceOf(a.id), 2_000);

    const letter = (await listDeadLetters(options)).find((entry) => entry.letter.origin.key === id);
    assert.ok(letter, "the refused command is on the dead-letter topic");
    assert.equal(letter.replayed_at, null);
    assert.match(letter.letter.reason, /refused/);
    assert.equal(letter.letter.origin.service, "transaction-command-service");
    assert.equal(letter.letter.origin.topic, `${options.topic_prefix}transfer.commands`);
    assert.equal(JSON.parse(letter.letter.value).snapshot.id, id);

    assert.equal(await replayDeadLetters(options, [letter]), 1);
    const after = (await listDeadLetters(options)).find(
      (entry) => entry.letter.message_id === letter.letter.message_id,
    );
    assert.ok(after?.replayed_at, "the replay is recorded");
    // The replayed PENDING command cannot move the FAILED record back, nor move money.
    await sleep(1_000);
    const record = await call("GET", `${urls.query}/transactions/${id}`, { headers: asAdmin() });
    assert.equal(record.body.data.transaction.status, "FAILED");
    assert.equal(await balanceOf(a.id), 2_000);
    assert.equal(await balanceOf(b.id), 0);
  });
});
