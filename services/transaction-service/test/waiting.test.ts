/**
 * The waiting-read mechanics without engines: the Prefer header, the bounds, wake-ups. The
 * integration test (test/integration/waiting-reads.test.ts) proves them through the API.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { FinalStatusWaiters, preferredWait_s } from "../src/waiting.ts";

describe("Prefer: wait=N", () => {
  it("reads the wait in seconds, capped at 30, among other preferences", () => {
    assert.equal(preferredWait_s("wait=5"), 5);
    assert.equal(preferredWait_s("respond-async, wait=10"), 10);
    assert.equal(preferredWait_s('WAIT = "7"'), 7);
    assert.equal(preferredWait_s("wait=100"), 30);
    assert.equal(preferredWait_s(["handling=lenient", "wait=3"]), 3);
  });

  it("ignores a missing or malformed wait", () => {
    for (const value of [undefined, "", "wait", "wait=", "wait=-1", "wait=1.5", "wait=abc", "waiting=3"]) {
      assert.equal(preferredWait_s(value), null, String(value));
    }
  });
});

describe("FinalStatusWaiters", () => {
  const pending = { status: "PENDING" };
  const done = { status: "COMPLETED" };
  const isFinal = (v: { status: string }) => v.status !== "PENDING";

  it("answers as soon as a notice for its id makes the status final", async () => {
    const waiters = new FinalStatusWaiters({ waiting_max: 10, waiting_per_caller_max: 10 });
    let current = pending;
    const started = Date.now();
    const waiting = waiters.waitForFinal({
      kind: "transfer",
      id: "a",
      caller: "user:1",
      wait_ms: 20_000,
      read: async () => current,
      isFinal,
    });
    await sleep(50);
    waiters.notify("transfer:b"); // another transfer: no effect
    current = done;
    waiters.notify("transfer:a");
    const result = await waiting;
    assert.deepEqual(result, { value: done, applied: true });
    assert.ok(Date.now() - started < 10_000);
    assert.equal(waiters.waiting, 0);
  });

  it("answers with the current status when the wait runs out", async () => {
    const waiters = new FinalStatusWaiters({ waiting_max: 10, waiting_per_caller_max: 10 });
    const started = Date.now();
    const result = await waiters.waitForFinal({
      kind: "transfer",
      id: "a",
      caller: "user:1",
      wait_ms: 200,
      read: async () => pending,
      isFinal,
    });
    assert.deepEqual(result, { value: pending, applied: true });
    assert.ok(Date.now() - started >= 190);
  });

  it("answers at once beyond the per-caller and the total bounds, and frees slots when done", async () => {
    const waiters = new FinalStatusWaiters({ waiting_max: 3, waiting_per_caller_max: 2 });
    const hold = (caller: string) =>
      waiters.waitForFinal({
        kind: "transfer",
        id: "a",
        caller,
        wait_ms: 20_000,
        read: async () => pending,
        isFinal,
      });
    const held = [hold("user:1"), hold("user:1")];
    await sleep(20);
    const refused = await hold("user:1");
    assert.equal(refused.applied, false, "the third wait of one caller");
    const other = hold("user:2");
    await sleep(20);
    assert.equal(waiters.waiting, 3);
    assert.equal((await hold("user:3")).applied, false, "over the total");
    waiters.close();
    for (const result of await Promise.all([...held, other])) assert.equal(result.applied, true);
    assert.equal(waiters.waiting, 0);
  });

  it("ends a wait whose client went away", async () => {
    const waiters = new FinalStatusWaiters({ waiting_max: 10, waiting_per_caller_max: 10 });
    const gone = new AbortController();
    const waiting = waiters.waitForFinal({
      kind: "transfer",
      id: "a",
      caller: "user:1",
      wait_ms: 20_000,
      read: async () => pending,
      isFinal,
      signal: gone.signal,
    });
    await sleep(20);
    gone.abort();
    await waiting;
    assert.equal(waiters.waiting, 0);
  });
});
