import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { BoundedMap } from "../bounded-map.ts";

function lcg(seed: number): (n: number) => number {
  let state = seed;
  return (n) => {
    state = (state * 1_103_515_245 + 12_345) % 2 ** 31;
    return state % n;
  };
}

describe("BoundedMap", () => {
  it("with distinct keys, keeps exactly the max most recently set", () => {
    const map = new BoundedMap<number, string>(100);
    for (let key = 0; key < 10_000; key++) {
      map.set(key, `v${key}`);
      assert.equal(map.size, Math.min(key + 1, 100));
    }
    for (let key = 0; key < 10_000; key++) assert.equal(map.get(key), key >= 9_900 ? `v${key}` : undefined);
  });

  it("over random sets and deletes: never above max, never a stale value, the newest always kept", () => {
    const random = lcg(7);
    for (const max of [1, 2, 5, 64]) {
      const map = new BoundedMap<number, number>(max);
      const latest = new Map<number, number>();
      for (let step = 0; step < 20_000; step++) {
        const key = random(max * 3);
        if (random(5) === 0) {
          map.delete(key);
          latest.delete(key);
          assert.equal(map.has(key), false);
        } else {
          map.set(key, step);
          latest.set(key, step);
          assert.equal(map.get(key), step, "the key just set");
        }
        assert.ok(map.size <= max);
        for (let probe = 0; probe < max * 3; probe++) {
          const got = map.get(probe);
          if (got !== undefined) assert.equal(got, latest.get(probe), "a value other than the last set");
        }
      }
    }
  });

  it("refuses a bound below one", () => {
    assert.throws(() => new BoundedMap(0));
  });
});
