/**
 * The transfer cache on a real Redis (TEST_REDIS_URL; skipped when unset): puts made together
 * leave as one call, each entry still a compare-and-set by status rank (a PENDING put never
 * overwrites a COMPLETED entry), with the TTL of its status; an invalidation drops only entries
 * behind the saga's status and starts new generations of the users' lists, one call per chunk.
 * A list page is cached under the generation its lookup saw, so a page fetched while a change
 * landed is never served as the changed list's (payers' batch lists alike).
 * Final transfers are also kept in the process, a bounded number, and read from there.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { createClient } from "redis";
import type { TransferSnapshot } from "#packages/contracts/transfer.ts";
import { createLogger } from "#packages/log/index.ts";
import { PUT_BATCH_MAX, type Redis, TransferCache } from "../src/cache.ts";
import { DisbursementCache } from "../src/disbursements/cache.ts";

const REDIS_URL = process.env.TEST_REDIS_URL ?? "";
const PREFIX = `${process.env.REDIS_KEY_PREFIX ?? ""}cache-test-${randomUUID()}:`;
const TTL_PENDING_MS = 60_000;
const TTL_FINAL_MS = 600_000;
/** Both caches' options here. */
const OPTIONS = {
  prefix: PREFIX,
  logger: createLogger("cache-test", "silent"),
  ttl_pending_ms: TTL_PENDING_MS,
  ttl_final_ms: TTL_FINAL_MS,
  ttl_list_ms: 60_000,
  timeout_ms: 5_000,
};

function snapshot(status: TransferSnapshot["status"], id = randomUUID()): TransferSnapshot {
  const at = new Date().toISOString();
  return {
    id,
    amount: 100,
    source_user_id: 1,
    dest_user_id: 2,
    source_init_bal: 1_000,
    dest_init_bal: status === "COMPLETED" ? 0 : null,
    status,
    failure_reason: null,
    created_at: at,
    updated_at: at,
  };
}

describe("transfer cache write-through", { skip: REDIS_URL === "" ? "TEST_REDIS_URL unset" : false }, () => {
  const redis = createClient({ url: REDIS_URL });
  let evals = 0;
  let gets = 0;
  let cache: TransferCache;
  /** As `cache`, and keeping up to two final transfers in the process. */
  let keeping: TransferCache;

  before(async () => {
    await redis.connect();
    const counting: Redis = {
      get: (key) => {
        gets += 1;
        return redis.get(key);
      },
      set: (key, value, options) => redis.set(key, value, options),
      incr: (key) => redis.incr(key),
      eval: (script, options) => {
        evals += 1;
        return redis.eval(script, options);
      },
    };
    // Redis alone, so that every read below asks it.
    cache = new TransferCache(counting, { ...OPTIONS, final_local_max: 0 });
    keeping = new TransferCache(counting, { ...OPTIONS, final_local_max: 2 });
  });
  after(async () => {
    const keys = await redis.keys(`${PREFIX}*`);
    if (keys.length > 0) await redis.del(keys);
    await redis.quit();
  });

  it("sends puts made together as a few calls, every entry written with its status's TTL", async () => {
    const snapshots = Array.from({ length: 2 * PUT_BATCH_MAX + 10 }, (_, i) =>
      snapshot(i % 2 === 0 ? "COMPLETED" : "PENDING"),
    );
    evals = 0;
    await Promise.all(snapshots.map((s) => cache.putTransfer(s)));
    // The first goes alone (nothing in flight), the rest queue behind it and leave in full batches.
    assert.ok(evals <= 5, `${snapshots.length} puts took ${evals} calls`);
    for (const s of snapshots) {
      assert.deepEqual(await cache.getTransfer(s.id), s);
      const ttl_ms = await redis.pTTL(`${PREFIX}transfer:${s.id}`);
      const expected_ms = s.status === "PENDING" ? TTL_PENDING_MS : TTL_FINAL_MS;
      assert.ok(ttl_ms > expected_ms - 10_000 && ttl_ms <= expected_ms, `${s.status} TTL ${ttl_ms}`);
    }
  });

  it("never puts an older status over a newer one, in one call or across calls", async () => {
    const id = randomUUID();
    const completed = snapshot("COMPLETED", id);
    const pending = snapshot("PENDING", id);
    // One batch: the COMPLETED entry first, then a late PENDING put of the same transfer.
    await Promise.all([
      cache.putTransfer(snapshot("PENDING")),
      cache.putTransfer(completed),
      cache.putTransfer(pending),
    ]);
    assert.equal((await cache.getTransfer(id))?.status, "COMPLETED");
    await cache.putTransfer(pending);
    assert.equal((await cache.getTransfer(id))?.status, "COMPLETED");
  });

  it("drops only entries behind the saga's status, and starts new list generations, one call each", async () => {
    const behind = snapshot("PENDING");
    const level = snapshot("COMPLETED");
    const absent = snapshot("COMPLETED");
    await Promise.all([cache.putTransfer(behind), cache.putTransfer(level)]);
    evals = 0;
    await cache.invalidateOlder([
      { id: behind.id, status: "COMPLETED" },
      { id: level.id, status: "COMPLETED" },
      { id: absent.id, status: "FAILED" },
    ]);
    assert.equal(evals, 1);
    assert.equal(await cache.getTransfer(behind.id), null, "a PENDING entry behind COMPLETED is dropped");
    assert.deepEqual(await cache.getTransfer(level.id), level, "an entry at the saga's status stays");

    const users = [7_001, 7_002, 7_001];
    await cache.putList(7_001, await cache.getList(7_001, "page"), "page", { rows: 1 });
    assert.deepEqual((await cache.getList(7_001, "page")).page, { rows: 1 });
    evals = 0;
    await cache.touchUsers(users);
    assert.equal(evals, 1);
    assert.equal((await cache.getList(7_001, "page")).page, null, "the list's generation moved on");
    assert.equal(await redis.get(`${PREFIX}user-transfers-gen:7002`), "1");
  });

  it("never serves a page fetched across a change as the changed list's (users' and payers' lists)", async () => {
    const payers = new DisbursementCache(redis, OPTIONS);
    const lists = [
      {
        get: (page_key: string) => cache.getList(7_101, page_key),
        put: cache.putList.bind(cache, 7_101),
        touch: () => cache.touchUsers([7_101]),
      },
      {
        get: (page_key: string) => payers.getList(7_102, page_key),
        put: payers.putList.bind(payers, 7_102),
        touch: () => payers.touchPayer(7_102),
      },
    ];
    for (const list of lists) {
      // A reader misses and asks the query service; the record lands and its event bumps the
      // generation; the reader's page (from before the record) then comes back to be cached.
      const missed = await list.get("20:");
      assert.equal(missed.page, null);
      await list.touch();
      await list.put(missed, "20:", { rows: "before the change" });
      assert.equal((await list.get("20:")).page, null, "a page older than the change is never served");
      const fresh = await list.get("20:");
      await list.put(fresh, "20:", { rows: "after the change" });
      assert.deepEqual((await list.get("20:")).page, { rows: "after the change" });
    }
  });

  it("keeps final transfers in the process, at most final_local_max, and never a pending one", async () => {
    const [first, second, third] = [snapshot("COMPLETED"), snapshot("FAILED"), snapshot("COMPLETED")];
    const pending = snapshot("PENDING");
    await Promise.all([first, second, pending].map((s) => keeping.putTransfer(s)));
    // Gone from Redis (its TTL, say): the final ones are still read, from the process.
    await redis.del([first, second, pending].map((s) => `${PREFIX}transfer:${s.id}`));
    gets = 0;
    assert.deepEqual(await keeping.getTransfer(first.id.toUpperCase()), first);
    assert.deepEqual(await keeping.getTransfer(second.id), second);
    assert.equal(gets, 0, "no Redis round trip for a kept transfer");
    assert.equal(await keeping.getTransfer(pending.id), null, "a pending transfer is never kept");
    // A third final one (read from Redis) pushes out the oldest.
    await cache.putTransfer(third);
    assert.deepEqual(await keeping.getTransfer(third.id), third);
    assert.equal(await keeping.getTransfer(first.id), null, "the oldest kept transfer left");
    assert.deepEqual(await keeping.getTransfer(second.id), second);
  });
});
