/**
 * The services' Redis client: while Redis is away a command fails at once instead of waiting in a
 * queue, and the client connects by itself once Redis answers (a relay to the test stack's Redis,
 * TEST_REDIS_URL or REDIS_URL, opened late on the port the client was given; skipped when
 * neither is set). It warns once while Redis is away at start, at debug after that.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { createServer, type Server, connect as tcpConnect } from "node:net";
import { Writable } from "node:stream";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { pino } from "pino";
import { withTimeout } from "#packages/runtime/index.ts";
import { openRedis } from "../index.ts";

const url = process.env.TEST_REDIS_URL ?? process.env.REDIS_URL;
const logger = pino({ level: "silent" });

/** A port nothing listens on now (taken from the kernel, then released). */
async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as { port: number };
  server.close();
  await once(server, "close");
  return port;
}

/** A TCP relay on `port` to the Redis at `target`: Redis arriving where the client waits. */
async function relay(port: number, target: URL): Promise<Server> {
  const server = createServer((inbound) => {
    const outbound = tcpConnect(Number(target.port || 6379), target.hostname);
    inbound.pipe(outbound).pipe(inbound);
    inbound.on("error", () => outbound.destroy());
    outbound.on("error", () => inbound.destroy());
  });
  server.listen(port, "127.0.0.1");
  await once(server, "listening");
  return server;
}

describe("openRedis", () => {
  it("fails a command at once while Redis is away, rather than queueing it", async () => {
    const redis = openRedis({
      url: `redis://127.0.0.1:${await freePort()}/0`,
      logger,
      unreachable_message: "away",
    });
    try {
      const started = Date.now();
      await assert.rejects(withTimeout(redis.ping(), 2_000, "ping while Redis is away"), (error: Error) => {
        assert.doesNotMatch(
          error.message,
          /ping while Redis is away/,
          "the command waited instead of failing",
        );
        return true;
      });
      assert.ok(Date.now() - started < 1_000, `took ${Date.now() - started} ms`);
    } finally {
      redis.destroy();
    }
  });

  it("warns once when Redis is not there at start, not on every attempt nor at shutdown", async () => {
    const lines: Array<{ level: number; msg: string }> = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(JSON.parse(chunk.toString("utf8")) as { level: number; msg: string });
        done();
      },
    });
    const watched = pino({ level: "debug" }, sink);
    const redis = openRedis({
      url: `redis://127.0.0.1:${await freePort()}/0`,
      logger: watched,
      unreachable_message: "away",
    });
    // Several attempts (the backoff starts at 100 ms).
    await sleep(800);
    const warned = () => lines.filter((line) => line.level === 40);
    assert.deepEqual(
      warned().map((line) => line.msg),
      ["away"],
    );
    assert.ok(lines.filter((line) => line.level === 20).length >= 2, "later attempts are logged at debug");
    redis.destroy();
    await sleep(100);
    assert.equal(warned().length, 1, "closing the client is no new warning");
  });

  it("connects by itself once Redis answers", {
    skip: url === undefined ? "no TEST_REDIS_URL or REDIS_URL" : false,
  }, async () => {
    const target = new URL(url ?? "");
    // The stack's URL (its password included), pointed at a port where Redis is not yet.
    const away = new URL(target);
    away.hostname = "127.0.0.1";
    away.port = String(await freePort());
    const redis = openRedis({ url: away.href, logger, unreachable_message: "away" });
    let server: Server | undefined;
    try {
      // Let a few attempts fail first (the backoff starts at 100 ms).
      await sleep(500);
      assert.equal(redis.isReady, false);
      server = await relay(Number(away.port), target);
      // The backoff is capped at 3 s; generous on a shared machine.
      const deadline = Date.now() + 15_000;
      while (!redis.isReady && Date.now() < deadline) await sleep(50);
      assert.equal(await redis.ping(), "PONG");
    } finally {
      redis.destroy();
      server?.close();
    }
  });
});
