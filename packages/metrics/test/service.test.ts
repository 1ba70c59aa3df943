// A service's metrics as startServiceMetrics wires them: /metrics on the internal listener only,
// both listeners counted, and a limiter's 429 counted by route and by what it limits.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { RateLimiter } from "#packages/http/rate-limit.ts";
import { createListeners } from "#packages/http/server.ts";
import { createLogger } from "#packages/log/index.ts";
import { startServiceMetrics } from "../service.ts";

const logger = createLogger("service-metrics-test", "silent");

describe("metrics: a service's wiring", () => {
  it("serves /metrics on the internal listener only and counts rate-limit refusals by route and limit", async () => {
    const listeners = createListeners({ logger });
    startServiceMetrics(listeners, logger);
    // A limiter of one request per window per address, on a Redis that counts in memory.
    const counts = new Map<string, number>();
    const redis = {
      eval: async (_script: string, options: { keys: string[] }) => {
        const key = options.keys[0] ?? "";
        counts.set(key, (counts.get(key) ?? 0) + 1);
        return counts.get(key) ?? 0;
      },
      del: async () => 1,
    };
    const limiter = new RateLimiter(redis, {
      prefix: "",
      max: 1,
      window_ms: 60_000,
      timeout_ms: 1_000,
      logger,
      per: "client address",
    });
    listeners.public.post("/things/:id", async (request, reply) => {
      reply.headers(await limiter.enforce(`address:${request.ip}`));
      return { ok: true };
    });
    try {
      assert.equal((await listeners.public.inject({ method: "POST", url: "/things/1" })).statusCode, 200);
      assert.equal((await listeners.public.inject({ method: "POST", url: "/things/2" })).statusCode, 429);
      assert.equal((await listeners.public.inject({ url: "/metrics" })).statusCode, 404);
      const scrape = await listeners.internal.inject({ url: "/metrics" });
      assert.equal(scrape.statusCode, 200);
      assert.match(
        scrape.body,
        /^dps_rate_limit_refusals_total\{route="\/things\/:id",limit="client address"\} 1$/m,
      );
      assert.match(
        scrape.body,
        /^dps_http_requests_total\{listener="public",method="POST",route="\/things\/:id",status="429"\} 1$/m,
      );
    } finally {
      await listeners.public.close();
      await listeners.internal.close();
    }
  });
});
