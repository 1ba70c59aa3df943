import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Batcher, BatcherOverloadedError } from "../batcher.ts";

/** A batcher whose batches finish only when the test says so. */
function gated(options: {
  batch_max?: number;
  in_flight_max?: number;
  waiting_max?: number;
  keyed?: boolean;
}) {
  const batches: number[][] = [];
  const gates: Array<() => void> = [];
  const batcher = new Batcher<number, number>({
    name: "test",
    batch_max: options.batch_max ?? 100,
    in_flight_max: options.in_flight_max ?? 1,
    waiting_max: options.waiting_max ?? 1_000,
    ...(options.keyed ? { key: (n: number) => String(n % 10) } : {}),
    run: async (items) => {
      batches.push(items);
      await new Promise<void>((resolve) => gates.push(resolve));
      return items.map((n) => n * 2);
    },
  });
  const release = async () => {
    const gate = gates.shift();
    assert.ok(gate, "a batch is running");
    gate();
    await new Promise((resolve) => setImmediate(resolve));
  };
  return { batcher, batches, release };
}

describe("Batcher", () => {
  it("runs an item at once when idle, and queued items as one batch after it", async () => {
    const { batcher, batches, release } = gated({});
    const first = batcher.submit(1);
    assert.deepEqual(batches, [[1]]);
    const rest = [2, 3, 4].map((n) => batcher.submit(n));
    assert.equal(batcher.waiting, 3);
    await release();
    assert.equal(await first, 2);
    assert.deepEqual(batches, [[1], [2, 3, 4]]);
    await release();
    assert.deepEqual(await Promise.all(rest), [4, 6, 8]);
  });

  it("keeps batches within batch_max and runs another beside a running one only when it is full", async () => {
    const { batcher, batches, release } = gated({ batch_max: 2, in_flight_max: 2 });
    const all = [1, 2, 3, 4, 5, 6].map((n) => batcher.submit(n));
    // 2 waits for 1 alone; with 3 a full batch waits, and runs beside 1.
    assert.deepEqual(batches, [[1], [2, 3]]);
    await release();
    assert.deepEqual(batches, [[1], [2, 3], [4, 5]]);
    await release();
    // 6 alone is a partial batch: it waits for [4, 5] rather than run beside it.
    assert.deepEqual(batches, [[1], [2, 3], [4, 5]]);
    await release();
    assert.deepEqual(batches, [[1], [2, 3], [4, 5], [6]]);
    await release();
    assert.deepEqual(await Promise.all(all), [2, 4, 6, 8, 10, 12]);
  });

  it("never puts two items with one key in the same batch, and keeps their order", async () => {
    const { batcher, batches, release } = gated({ keyed: true });
    const all = [100, 1, 11, 2, 21, 12].map((n) => batcher.submit(n));
    await release();
    assert.deepEqual(batches[1], [1, 2]);
    await release();
    assert.deepEqual(batches[2], [11, 12]);
    await release();
    assert.deepEqual(batches[3], [21]);
    await release();
    assert.deepEqual(await Promise.all(all), [200, 2, 22, 4, 42, 24]);
  });

  it("fails every item of a failed batch and goes on with the next", async () => {
    let calls = 0;
    const batcher = new Batcher<number, number>({
      name: "test",
      batch_max: 10,
      in_flight_max: 1,
      waiting_max: 10,
      run: async (items) => {
        calls += 1;
        if (calls === 2) throw new Error("engine down");
        return items;
      },
    });
    const first = batcher.submit(1);
    const failing = [batcher.submit(2), batcher.submit(3)];
    assert.equal(await first, 1);
    for (const item of failing) await assert.rejects(item, /engine down/);
    assert.equal(await batcher.submit(4), 4);
  });

  it("fails a batch whose run returns the wrong number of results", async () => {
    const batcher = new Batcher<number, number>({
      name: "short",
      batch_max: 10,
      in_flight_max: 1,
      waiting_max: 10,
      run: async () => [],
    });
    await assert.rejects(batcher.submit(1), /invariant: batch short of 1 returned 0 results/);
  });

  it("refuses at once beyond waiting_max", async () => {
    const { batcher, release } = gated({ waiting_max: 2 });
    const running = batcher.submit(1);
    const queued = [batcher.submit(2), batcher.submit(3)];
    await assert.rejects(batcher.submit(4), BatcherOverloadedError);
    await release();
    await release();
    assert.equal(await running, 2);
    assert.deepEqual(await Promise.all(queued), [4, 6]);
  });
});
