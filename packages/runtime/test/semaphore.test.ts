import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Semaphore, SemaphoreFull } from "../semaphore.ts";

describe("Semaphore", () => {
  it("runs at most max tasks at once, queues up to queue_max, refuses beyond at once", async () => {
    const slots = new Semaphore(2, 1);
    let running = 0;
    let peak = 0;
    const task = async () => {
      running += 1;
      peak = Math.max(peak, running);
      await sleep(20);
      running -= 1;
      return "done";
    };
    const accepted = [slots.run(task), slots.run(task), slots.run(task)];
    assert.equal(slots.running, 2);
    assert.equal(slots.waiting, 1);
    await assert.rejects(slots.run(task), SemaphoreFull);
    assert.deepEqual(await Promise.all(accepted), ["done", "done", "done"]);
    assert.equal(peak, 2);
    assert.equal(slots.running, 0);
  });

  it("frees the slot of a task that fails", async () => {
    const slots = new Semaphore(1, 0);
    await assert.rejects(
      slots.run(async () => {
        throw new Error("boom");
      }),
      /boom/,
    );
    assert.equal(await slots.run(async () => 1), 1);
  });
});
