import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { z } from "zod";
import { createLogger } from "#packages/log/index.ts";
import { UpstreamError } from "../client.ts";
import { createHttpServer, isEngineUnavailable, refuseMethod, registerHealth } from "../server.ts";

function app() {
  const server = createHttpServer({ logger: createLogger("http-test", "silent"), body_limit_bytes: 1024 });
  server.post("/things", { schema: { body: z.strictObject({ n: z.number().int() }) } }, async (request) => ({
    n: request.body.n,
  }));
  server.get("/things/:id", async () => ({ ok: true }));
  refuseMethod(server, "GET", "/things/special", ["POST"]);
  server.post("/things/special", async () => ({ ok: true }));
  server.get("/down", async () => {
    const error = new Error("connection closed");
    error.name = "MongoServerSelectionError";
    throw error;
  });
  server.get("/bug", async () => {
    throw new Error("a bug with internals");
  });
  return server;
}

describe("the shared HTTP plumbing", () => {
  it("answers bad bodies in the envelope: 400 for bad JSON, 413 too large, 415 not JSON", async () => {
    const server = app();
    const json = { "content-type": "application/json" };
    const bad = await server.inject({ method: "POST", url: "/things", headers: json, payload: "{nope" });
    assert.equal(bad.statusCode, 400);
    assert.equal(bad.json().success, false);
    const big = await server.inject({
      method: "POST",
      url: "/things",
      headers: json,
      payload: "x".repeat(2_000),
    });
    assert.equal(big.statusCode, 413);
    assert.equal(big.json().code, "body_too_large");
    const text = await server.inject({
      method: "POST",
      url: "/things",
      headers: { "content-type": "text/plain" },
      payload: '{"n":1}',
    });
    assert.equal(text.statusCode, 415);
    assert.equal(text.json().code, "unsupported_media_type");
    const invalid = await server.inject({
      method: "POST",
      url: "/things",
      headers: json,
      payload: '{"n":1.5}',
    });
    assert.equal(invalid.statusCode, 400);
    assert.match(invalid.json().message, /^body\.n: /);
  });

  it("answers 405 with Allow for a known path, 404 for an unknown one", async () => {
    const server = app();
    const wrong = await server.inject({ method: "DELETE", url: "/things/7" });
    assert.equal(wrong.statusCode, 405);
    assert.equal(wrong.headers.allow, "GET, HEAD");
    assert.equal(wrong.json().code, "method_not_allowed");
    const special = await server.inject({ method: "GET", url: "/things/special" });
    assert.equal(special.statusCode, 405);
    assert.equal(special.headers.allow, "POST");
    const query = await server.inject({ method: "QUERY", url: "/things", payload: "x" });
    assert.equal(query.statusCode, 405);
    const nowhere = await server.inject({ method: "GET", url: "/nowhere" });
    assert.equal(nowhere.statusCode, 404);
    assert.equal(nowhere.json().code, "route_not_found");
  });

  it("answers an engine outage with 503 and Retry-After, a bug with a bare 500", async () => {
    const server = app();
    const down = await server.inject({ method: "GET", url: "/down" });
    assert.equal(down.statusCode, 503);
    assert.equal(down.headers["retry-after"], "1");
    assert.equal(down.json().code, "engine_unavailable");
    const bug = await server.inject({ method: "GET", url: "/bug" });
    assert.equal(bug.statusCode, 500);
    assert.deepEqual(bug.json(), { success: false, message: "internal error", code: "internal_error" });
  });

  it("tells engine outages from bugs", () => {
    assert.equal(isEngineUnavailable(new UpstreamError("timeout", "slow")), true);
    assert.equal(isEngineUnavailable(Object.assign(new Error("x"), { code: "ECONNREFUSED" })), true);
    assert.equal(isEngineUnavailable(Object.assign(new Error("x"), { code: "57P01" })), true);
    assert.equal(isEngineUnavailable(Object.assign(new Error("x"), { name: "MongoNetworkError" })), true);
    assert.equal(isEngineUnavailable(new TypeError("undefined is not a function")), false);
    assert.equal(isEngineUnavailable(Object.assign(new Error("x"), { code: "23505" })), false);
  });

  it("is ready while the engines it needs answer, though a shared one it uses later does not", async () => {
    const server = createHttpServer({ logger: createLogger("http-test", "silent") });
    const checks = {
      postgres: async () => undefined,
      kafka: async () => {
        throw new Error("broker unreachable");
      },
    };
    registerHealth(server, "test-service", checks, { ready: ["postgres"] });
    const health = await server.inject({ method: "GET", url: "/health" });
    assert.equal(health.statusCode, 503, "the whole health names the broker");
    const ready = await server.inject({ method: "GET", url: "/health/ready" });
    assert.equal(ready.statusCode, 200);
    assert.deepEqual(ready.json(), { status: "up" });

    const strict = createHttpServer({ logger: createLogger("http-test", "silent") });
    registerHealth(strict, "test-service", checks);
    const all = await strict.inject({ method: "GET", url: "/health/ready" });
    assert.equal(all.statusCode, 503, "without a readiness list every check counts");
    assert.deepEqual(all.json(), { status: "down" });
  });
});
