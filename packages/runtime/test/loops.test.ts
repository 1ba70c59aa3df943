import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { runConcurrently, runLoop } from "../loops.ts";

describe("runConcurrently", () => {
  it("runs every item once, never more than concurrency_max at once", async () => {
    let running = 0;
    let peak = 0;
    const seen: number[] = [];
    await runConcurrently([...Array(20).keys()], 3, async (item) => {
      running += 1;
      peak = Math.max(peak, running);
      await sleep(item % 4);
      seen.push(item);
      running -= 1;
    });
    assert.equal(peak, 3);
    assert.deepEqual(
      seen.sort((a, b) => a - b),
      [...Array(20).keys()],
    );
  });

  it("starts nothing new after a failure, awaits the calls in flight, then throws the first error", async () => {
    const started: number[] = [];
    let finished = 0;
    await assert.rejects(
      runConcurrently([...Array(10).keys()], 2, async (item) => {
        started.push(item);
        if (item === 1) throw new Error("item 1 failed");
        await sleep(20);
        finished += 1;
      }),
      /item 1 failed/,
    );
    assert.deepEqual(started, [0, 1], "no item starts after the failure");
    assert.equal(finished, 1, "the call in flight finished before the promise settled");
  });

  it("runs nothing for an empty list, and refuses a bound below one", async () => {
    await runConcurrently([], 4, async () => assert.fail("no item"));
    await assert.rejects(
      runConcurrently([1], 0, async () => {}),
      /invariant/,
    );
  });
});

describe("runLoop", () => {
  it("runs busy rounds back to back, waits idle_ms after an idle one, and a wake ends the wait", async () => {
    const stop = new AbortController();
    let rounds = 0;
    const loop = runLoop({
      signal: stop.signal,
      idle_ms: 60_000,
      tick: async () => (++rounds < 3 ? "busy" : "idle"),
      onError: () => assert.fail("no failure"),
    });
    await sleep(50);
    assert.equal(rounds, 3, "two busy rounds, then one idle round that waits");
    loop.wake();
    await sleep(50);
    assert.equal(rounds, 4, "a wake runs a round at once");
    stop.abort();
    await loop.done;
  });

  it("a wake during an idle round runs another round at once: the work may have come after the round looked", async () => {
    const stop = new AbortController();
    let rounds = 0;
    const loop = runLoop({
      signal: stop.signal,
      idle_ms: 60_000,
      tick: async () => {
        rounds += 1;
        // Work arrives while the first round is still looking.
        if (rounds === 1) {
          await sleep(5);
          loop.wake();
        }
        return "idle";
      },
      onError: () => assert.fail("no failure"),
    });
    await sleep(50);
    assert.equal(rounds, 2, "the woken idle round is followed by one more, then the wait");
    stop.abort();
    await loop.done;
  });

  it("with gather_ms, a woken round waits that long so wakes meanwhile share it; a busy round's successor never waits", async () => {
    const stop = new AbortController();
    const rounds: number[] = [];
    let busy = false;
    const loop = runLoop({
      signal: stop.signal,
      idle_ms: 60_000,
      gather_ms: 100,
      tick: async () => {
        rounds.push(Date.now());
        return busy && rounds.length < 4 ? "busy" : "idle";
      },
      onError: () => assert.fail("no failure"),
    });
    await sleep(20);
    assert.equal(rounds.length, 1, "the first round runs at once");
    const woken_ms = Date.now();
    loop.wake();
    await sleep(20);
    loop.wake();
    loop.wake();
    assert.equal(rounds.length, 1, "woken, the loop gathers before it looks");
    await sleep(150);
    assert.equal(rounds.length, 2, "three wakes within the gather: one round");
    assert.ok((rounds[1] as number) - woken_ms >= 95, "the round came after the gather");
    busy = true;
    loop.wake();
    await sleep(150);
    assert.equal(rounds.length, 4, "after a gather, busy rounds run back to back");
    assert.ok((rounds[3] as number) - (rounds[2] as number) < 50, "no gather after a busy round");
    loop.wake();
    await sleep(20);
    stop.abort();
    await loop.done;
    assert.equal(rounds.length, 4, "stopped while gathering: no round more");
  });

  it("wakeNow ends the idle wait without gathering, and does nothing during a round", async () => {
    const stop = new AbortController();
    const rounds: number[] = [];
    const loop = runLoop({
      signal: stop.signal,
      idle_ms: 60_000,
      gather_ms: 1_000,
      tick: async () => {
        rounds.push(Date.now());
        if (rounds.length === 1) {
          await sleep(5);
          loop.wakeNow(); // during the round: the idle result decides, so the loop waits
        }
        return "idle";
      },
      onError: () => assert.fail("no failure"),
    });
    await sleep(50);
    assert.equal(rounds.length, 1, "a wakeNow during a round does not run another");
    const woken_ms = Date.now();
    loop.wakeNow();
    await sleep(50);
    assert.equal(rounds.length, 2, "a wakeNow in the idle wait runs a round");
    assert.ok((rounds[1] as number) - woken_ms < 40, "without the gather");
    stop.abort();
    await loop.done;
  });

  it("backs off after each failure, with the count of failures in a row, and resets it after a success", async () => {
    const stop = new AbortController();
    const outcomes = [false, false, true, false];
    const errors: number[] = [];
    const waits: number[] = [];
    const loop = runLoop({
      signal: stop.signal,
      idle_ms: 60_000,
      retry_ms: (failures) => {
        waits.push(failures);
        return 1;
      },
      tick: async () => {
        if (outcomes.shift() === false) throw new Error("engine away");
        return outcomes.length === 0 ? "idle" : "busy";
      },
      onError: (_, failures) => errors.push(failures),
    });
    await sleep(50);
    assert.deepEqual(errors, [1, 2, 1]);
    assert.deepEqual(waits, [1, 2, 1]);
    stop.abort();
    await loop.done;
  });

  it("a round that reports itself healthy before failing starts a new series of failures", async () => {
    const stop = new AbortController();
    const errors: number[] = [];
    let rounds = 0;
    const loop = runLoop({
      signal: stop.signal,
      idle_ms: 60_000,
      retry_ms: () => 1,
      tick: async (round) => {
        rounds += 1;
        if (rounds === 3) round.healthy();
        if (rounds <= 4) throw new Error("consumer broke");
        return "idle";
      },
      onError: (_, failures) => errors.push(failures),
    });
    await sleep(50);
    assert.deepEqual(errors, [1, 2, 1, 2]);
    stop.abort();
    await loop.done;
  });

  it("stops at once when aborted, even in a long idle wait or backoff", async () => {
    for (const failing of [false, true]) {
      const stop = new AbortController();
      let rounds = 0;
      const loop = runLoop({
        signal: stop.signal,
        idle_ms: 60_000,
        retry_ms: () => 60_000,
        tick: async () => {
          rounds += 1;
          if (failing) throw new Error("engine away");
          return "idle";
        },
        onError: () => {},
      });
      await sleep(20);
      const stopped_at = Date.now();
      stop.abort();
      await loop.done;
      assert.ok(Date.now() - stopped_at < 1_000, "the wait ended with the stop");
      assert.equal(rounds, 1);
    }
  });
});
