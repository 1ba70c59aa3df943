/**
 * callJson against a real local HTTP server: answers, timeouts and network errors as
 * UpstreamError kinds; connections kept alive between calls; and no timer of a finished call
 * left behind (each one used to fire long after its answer, at a cost per call).
 */
import assert from "node:assert/strict";
import { createHook } from "node:async_hooks";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { callJson, UpstreamError } from "../client.ts";

describe("callJson", () => {
  const connections: unknown[] = [];
  const server = http.createServer((request, response) => {
    let body = "";
    request.on("data", (chunk: Buffer) => {
      body += chunk.toString("utf8");
    });
    request.on("end", () => {
      if (request.url === "/silent") return; // never answers
      if (request.url === "/text") {
        response.end("not json");
        return;
      }
      response.setHeader("content-type", "application/json");
      response.end(JSON.stringify({ method: request.method, body: body === "" ? null : JSON.parse(body) }));
    });
  });
  server.on("connection", (socket) => connections.push(socket));
  let base = "";
  before(async () => {
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it("sends a JSON body and reads the JSON answer, over one kept-alive connection", async () => {
    const before_n = connections.length;
    for (let i = 0; i < 3; i++) {
      const answer = await callJson(`${base}/echo`, { method: "POST", body: { n: i }, timeout_ms: 5_000 });
      assert.deepEqual(answer, { status: 200, body: { method: "POST", body: { n: i } } });
    }
    assert.equal(connections.length - before_n, 1);
  });

  it("leaves no timer behind once a call has its answer", async () => {
    // A timeout no other timer here uses: the call's own deadline timer is recognisable by it.
    const timeout_ms = 43_219;
    const timers: Array<{ _destroyed?: boolean }> = [];
    const hook = createHook({
      init(_id, type, _trigger, resource) {
        const timer = resource as { _idleTimeout?: number; _destroyed?: boolean };
        if (type === "Timeout" && timer._idleTimeout === timeout_ms) timers.push(timer);
      },
    }).enable();
    try {
      await callJson(`${base}/echo`, { method: "GET", timeout_ms });
    } finally {
      hook.disable();
    }
    await sleep(10);
    assert.ok(timers.length <= 1, `${timers.length} deadline timers for one call`);
    assert.ok(
      timers.every((timer) => timer._destroyed === true),
      "the deadline of a finished call is still pending",
    );
  });

  it("gives up after timeout_ms as a timeout, and non-JSON as a bad response", async () => {
    const started = performance.now();
    await assert.rejects(
      callJson(`${base}/silent`, { method: "GET", timeout_ms: 100 }),
      (error: unknown) => error instanceof UpstreamError && error.cause_kind === "timeout",
    );
    assert.ok(performance.now() - started < 5_000);
    await assert.rejects(
      callJson(`${base}/text`, { method: "GET", timeout_ms: 5_000 }),
      (error: unknown) => error instanceof UpstreamError && error.cause_kind === "bad_response",
    );
  });

  it("reports a refused connection as a network error", async () => {
    const closed = http.createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    await assert.rejects(
      callJson(`http://127.0.0.1:${port}/`, { method: "GET", timeout_ms: 5_000 }),
      (error: unknown) => error instanceof UpstreamError && error.cause_kind === "network",
    );
  });
});
