import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createLogger } from "#packages/log/index.ts";
import { InvariantError } from "#packages/runtime/assert.ts";
import type { ConsumedMessage } from "../index.ts";
import { type HandlePolicy, handleWithRetry } from "../retry.ts";

const message = (offset: number): ConsumedMessage => ({
  topic: "unit.transfer.events",
  partition: 0,
  offset: BigInt(offset),
  key: `k${offset}`,
  value: `v${offset}`,
});

/** A policy around `handle`, counting its calls and keeping its dead letters. */
function policyFor(handle: (values: string[]) => void, deadLetters = true) {
  const calls: string[][] = [];
  const letters: Array<{ value: string; reason: string }> = [];
  const policy: HandlePolicy = {
    handleBatch: async (messages) => {
      const values = messages.map((m) => m.value);
      calls.push(values);
      handle(values);
    },
    deadLetter: deadLetters
      ? async (m, reason) => {
          letters.push({ value: m.value, reason });
        }
      : undefined,
    logger: createLogger("retry-test", "silent"),
    isStopped: () => false,
    progress: () => {},
    retry_delay_ms: () => 0,
  };
  return { policy, calls, letters };
}

describe("a consumer's handling of a batch", () => {
  it("retries an ordinary failure until the handler takes the batch", async () => {
    let failures = 3;
    const { policy, calls, letters } = policyFor(() => {
      if (failures-- > 0) throw new Error("engine away");
    });
    await handleWithRetry([message(1), message(2)], policy);
    assert.equal(calls.length, 4);
    assert.deepEqual(letters, []);
  });

  it("dead-letters the message that breaks an invariant at once, and handles the others", async () => {
    const { policy, calls, letters } = policyFor((values) => {
      if (values.includes("v2")) throw new InvariantError("event for a state that cannot receive it");
    });
    await handleWithRetry([message(1), message(2), message(3)], policy);
    assert.deepEqual(
      calls,
      [["v1", "v2", "v3"], ["v1"], ["v2"], ["v3"]],
      "no retry; one at a time, in order",
    );
    assert.deepEqual(letters, [
      { value: "v2", reason: "invariant: event for a state that cannot receive it" },
    ]);
  });

  it("without dead letters, retries a breach like any failure", async () => {
    let failures = 2;
    const { policy, calls } = policyFor(() => {
      if (failures-- > 0) throw new InvariantError("x");
    }, false);
    await handleWithRetry([message(1)], policy);
    assert.equal(calls.length, 3);
  });

  it("ends its retries with an error once the consumer stops", async () => {
    const { policy } = policyFor(() => {
      throw new Error("engine away");
    });
    let attempts = 0;
    policy.isStopped = () => attempts++ >= 2;
    await assert.rejects(handleWithRetry([message(1)], policy), /consumer stopping/);
  });
});
