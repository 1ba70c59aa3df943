/**
 * transaction-service's view of token versions against a real Redis (TEST_REDIS_URL or
 * REDIS_URL; skipped when neither is set), with its own key prefix: remembered for cache_ms,
 * then read again; refused with 503 when Redis does not answer.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { createClient } from "redis";
import { ApiError } from "../errors.ts";
import { CachedTokenVersions, tokenVersionKey, writeTokenVersion } from "../token-versions.ts";

const url = process.env.TEST_REDIS_URL ?? process.env.REDIS_URL;
const prefix = `${process.env.REDIS_KEY_PREFIX ?? ""}tv-test-${randomUUID()}:`;

describe("token versions (real Redis)", {
  skip: url === undefined ? "no TEST_REDIS_URL or REDIS_URL" : false,
}, () => {
  const redis = createClient({ url: url ?? "", socket: { connectTimeout: 2_000 } });
  before(async () => {
    await redis.connect();
  });
  after(async () => {
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(keys);
    await redis.quit();
  });

  it("reads 0 for a user never changed, remembers a version for cache_ms, then reads it again", async () => {
    const versions = new CachedTokenVersions(redis, { prefix, cache_ms: 300, timeout_ms: 500 });
    assert.equal(await versions.current(1), 0);
    await writeTokenVersion(redis, prefix, 1, 3, 500);
    // Within cache_ms the remembered value stands (this is what user-service waits out).
    assert.equal(await versions.current(1), 0);
    await sleep(350);
    assert.equal(await versions.current(1), 3);
    const uncached = new CachedTokenVersions(redis, { prefix, cache_ms: 0, timeout_ms: 500 });
    await writeTokenVersion(redis, prefix, 1, 4, 500);
    assert.equal(await uncached.current(1), 4);
  });

  it("refuses with 503 when the version cannot be read, rather than accept a revoked token", async () => {
    const absent = createClient({ url: "redis://127.0.0.1:1/0", disableOfflineQueue: true });
    const versions = new CachedTokenVersions(absent, { prefix, cache_ms: 1_000, timeout_ms: 200 });
    const refused = await versions.current(2).then(
      () => assert.fail("an unreadable version must not pass"),
      (error: unknown) => error,
    );
    assert.ok(refused instanceof ApiError);
    assert.equal(refused.status, 503);
    await redis.set(tokenVersionKey(prefix, 3), "garbage");
    const garbage = new CachedTokenVersions(redis, { prefix, cache_ms: 0, timeout_ms: 500 });
    await assert.rejects(garbage.current(3), { status: 503 });
  });
});
