/**
 * The per-user rate limiter against a real Redis (TEST_REDIS_URL or REDIS_URL; skipped when
 * neither is set), with its own key prefix so it touches nothing else.
 */
import assert from "node:assert/strict";
import { createHash, randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import type { FastifyReply, FastifyRequest } from "fastify";
import { createClient } from "redis";
import { Authenticator } from "#packages/http/auth.ts";
import { ApiError } from "#packages/http/errors.ts";
import { createLogger } from "#packages/log/index.ts";
import { RateLimiter } from "../rate-limit.ts";

const url = process.env.TEST_REDIS_URL ?? process.env.REDIS_URL;
const logger = createLogger("rate-limit-test", "silent");
const prefix = `${process.env.REDIS_KEY_PREFIX ?? ""}rl-test-${randomUUID()}:`;

describe("per-user rate limit (real Redis)", {
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

  const limiter = (max: number, window_ms = 1_000) =>
    new RateLimiter(redis, { prefix, max, window_ms, timeout_ms: 1_000, logger });

  it("allows max requests per window, refuses the next, and counts users apart", async () => {
    const rl = limiter(3, 60_000);
    const t = 60_000 * 1_000_000 + 10_000; // 10 s into a window
    const decisions = [];
    for (let i = 0; i < 5; i++) decisions.push(await rl.take("user:1", t));
    assert.deepEqual(
      decisions.map((d) => d?.allowed),
      [true, true, true, false, false],
    );
    assert.deepEqual(
      decisions.map((d) => d?.remaining),
      [2, 1, 0, 0, 0],
    );
    assert.equal(decisions[3]?.reset_ms, 50_000);
    assert.equal((await rl.take("user:2", t))?.allowed, true);
    // The next window starts afresh.
    assert.equal((await rl.take("user:1", t + 50_000))?.allowed, true);
  });

  it("shares one count between instances and expires its keys", async () => {
    const a = limiter(2, 1_000);
    const b = limiter(2, 1_000);
    const t = Date.now();
    assert.equal((await a.take("user:9", t))?.allowed, true);
    assert.equal((await b.take("user:9", t))?.allowed, true);
    assert.equal((await a.take("user:9", t))?.allowed, false);
    const keys = await redis.keys(`${prefix}ratelimit:user:9:*`);
    assert.equal(keys.length, 1);
    const ttl = await redis.pTTL(keys[0] as string);
    assert.ok(ttl > 0 && ttl <= 3_000, `ttl ${ttl}`);
  });

  it("takes a busy subject's quota in growing leases: a few round trips, never past max", async () => {
    let evals = 0;
    const counting = {
      eval: (script: string, options: { keys: string[]; arguments: string[] }) => {
        evals += 1;
        return redis.eval(script, options);
      },
      del: (key: string) => redis.del(key),
    };
    const t = 60_000 * 2_000_000 + 1_000;
    const busy = new RateLimiter(counting, {
      prefix,
      max: 1_000_000,
      window_ms: 60_000,
      timeout_ms: 1_000,
      logger,
    });
    for (let i = 0; i < 1_000; i++) assert.equal((await busy.take("user:busy", t))?.allowed, true);
    // Leases of 1, 2, 4, ... 64, then 64 each: 7 + 14.
    assert.ok(evals <= 25, `${evals} round trips for 1,000 requests`);

    // Two instances, one count: exactly 100 through in the window, whatever the interleaving.
    const a = new RateLimiter(redis, { prefix, max: 100, window_ms: 60_000, timeout_ms: 1_000, logger });
    const b = new RateLimiter(redis, { prefix, max: 100, window_ms: 60_000, timeout_ms: 1_000, logger });
    let through = 0;
    for (let i = 0; i < 300; i++) {
      const decision = await (i % 3 === 0 ? b : a).take("user:shared", t);
      if (decision?.allowed === true) through += 1;
    }
    assert.ok(through <= 100 && through >= 100 - 2 * 6, `${through} let through of max 100`);
    // Alone, and side by side: exactly max.
    const alone = new RateLimiter(redis, { prefix, max: 40, window_ms: 60_000, timeout_ms: 1_000, logger });
    const decisions = await Promise.all(Array.from({ length: 120 }, () => alone.take("user:burst", t)));
    assert.equal(decisions.filter((d) => d?.allowed === true).length, 40);
    assert.equal((await alone.take("user:burst", t))?.allowed, false);
  });

  it("answers 429 with Retry-After and RateLimit headers through its hook", async () => {
    const auth = new Authenticator({ token_secret: "unit-test-secret-unit-test-secret-xx" });
    const token = (await auth.issueUserToken(77)).access_token;
    const rl = limiter(2, 5_000);
    const hook = rl.guard(auth, "user");
    const headers: Record<string, string> = {};
    const reply = {
      headers: (h: Record<string, string>) => Object.assign(headers, h),
    } as unknown as FastifyReply;
    const send = async () => {
      const request = { headers: { authorization: `Bearer ${token}` } } as unknown as FastifyRequest;
      await hook(request, reply);
    };
    await send();
    assert.equal(headers["ratelimit-limit"], "2");
    assert.equal(headers["ratelimit-remaining"], "1");
    await send();
    try {
      await send();
      assert.fail("expected a 429");
    } catch (error) {
      assert.ok(error instanceof ApiError);
      assert.equal(error.status, 429);
      assert.equal(error.code, "rate_limited");
      const retryAfter = Number(error.headers?.["retry-after"]);
      assert.ok(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= 5, `${retryAfter}`);
      assert.equal(error.headers?.["ratelimit-remaining"], "0");
    }
  });

  it("does not limit the operator, and is off at max 0", async () => {
    const auth = new Authenticator({
      admin_sha256: createHash("sha256").update("admin-token-for-the-unit-test").digest("hex"),
    });
    const request = {
      headers: { authorization: "Bearer admin-token-for-the-unit-test" },
    } as unknown as FastifyRequest;
    const hook = limiter(1, 60_000).guard(auth, "admin");
    const reply = {
      headers: () => assert.fail("no rate-limit headers for the operator"),
    } as unknown as FastifyReply;
    for (let i = 0; i < 3; i++) await hook(request, reply);
    const off = limiter(0);
    assert.equal(off.enabled, false);
    assert.equal(await off.take("user:1"), null);
  });
});

describe("the guard with the rate limit", () => {
  const secret = "unit-test-secret-unit-test-secret-xx";
  const reply = { headers: () => reply } as unknown as FastifyReply;
  const requestWith = (token: string) =>
    ({ headers: { authorization: `Bearer ${token}` } }) as unknown as FastifyRequest;

  it("takes the count while the revocation is checked, not after it", async () => {
    let releaseVersion: (version: number) => void = () => {};
    const asked: string[] = [];
    const versions = {
      current: () => {
        asked.push("version");
        return new Promise<number>((resolve) => {
          releaseVersion = resolve;
        });
      },
    };
    const redis = {
      eval: async () => {
        asked.push("count");
        return 1;
      },
      del: async () => 0,
    };
    const auth = new Authenticator({ token_secret: secret }, versions);
    const token = (await auth.issueUserToken(5)).access_token;
    const rl = new RateLimiter(redis, { prefix: "x:", max: 10, window_ms: 1_000, timeout_ms: 1_000, logger });
    const done = rl.guard(auth, "user")(requestWith(token), reply);
    // The token's signature is checked first (WebCrypto, off the thread): wait for the version's question.
    for (let i = 0; i < 400 && !asked.includes("version"); i++) await new Promise((r) => setTimeout(r, 5));
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(asked.sort(), ["count", "version"], "both asked before the version is answered");
    releaseVersion(0);
    await done;
  });

  it("answers a revoked token 401 even when the limit also refuses it, and a 403 caller is not counted", async () => {
    const counted: string[] = [];
    const redis = {
      eval: async (_script: string, options: { keys: string[] }) => {
        counted.push(options.keys[0] ?? "");
        return 1_000;
      },
      del: async () => 0,
    };
    const auth = new Authenticator({ token_secret: secret }, { current: async () => 1 });
    const stale = (await auth.issueUserToken(6, 0)).access_token;
    const rl = new RateLimiter(redis, { prefix: "x:", max: 10, window_ms: 1_000, timeout_ms: 1_000, logger });
    await assert.rejects(rl.guard(auth, "user")(requestWith(stale), reply), (error: unknown) => {
      assert.ok(error instanceof ApiError);
      assert.equal(error.status, 401);
      return true;
    });
    const current = (await auth.issueUserToken(6, 1)).access_token;
    await assert.rejects(rl.guard(auth, "admin")(requestWith(current), reply), (error: unknown) => {
      assert.ok(error instanceof ApiError);
      assert.equal(error.status, 403);
      return true;
    });
    assert.equal(counted.length, 1, "only the user route's request was counted");
  });
});

describe("per-user rate limit without Redis", () => {
  it("lets requests through when Redis fails or hangs", async () => {
    const failing = { eval: () => Promise.reject(new Error("connection refused")), del: async () => 0 };
    const hanging = { eval: () => new Promise<unknown>(() => {}), del: async () => 0 };
    for (const redis of [failing, hanging]) {
      const rl = new RateLimiter(redis, { prefix: "x:", max: 1, window_ms: 1_000, timeout_ms: 50, logger });
      assert.equal(await rl.take("user:1"), null);
      assert.equal(await rl.take("user:1"), null);
    }
  });
});
