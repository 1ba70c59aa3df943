import assert from "node:assert/strict";
import { test } from "node:test";
import { groupOf } from "../cpu.ts";
import { type ApiClient, countedLoop, pickPair } from "../load.ts";

test("pickPair never pairs a wallet with itself and gives the hot wallet its share", () => {
  const wallets = Array.from({ length: 100 }, (_, i) => 1_000 + i);
  let hot_payer = 0;
  let hot_payee = 0;
  const draws = 20_000;
  for (let i = 0; i < draws; i++) {
    const [source, dest] = pickPair({ wallets, hot_share: 0.1 });
    assert.notEqual(source, dest);
    assert.ok(wallets.includes(source) && wallets.includes(dest));
    if (source === 1_000) hot_payer += 1;
    if (dest === 1_000) hot_payee += 1;
  }
  // 5% + 1/100 of the uniform rest on each side, within a generous margin.
  for (const share of [hot_payer / draws, hot_payee / draws])
    assert.ok(share > 0.045 && share < 0.075, `share ${share}`);
});

test("pickPair works with two wallets and no hot share", () => {
  for (let i = 0; i < 100; i++) {
    const [source, dest] = pickPair({ wallets: [7, 8], hot_share: 0 });
    assert.deepEqual([source, dest].sort(), [7, 8]);
  }
});

test("groupOf names PostgreSQL backends by database and services by entry point", () => {
  const services = new Map([[42, "user-service"]]);
  assert.equal(groupOf(42, "node services/user-service/src/main.ts", services), "user-service");
  assert.equal(
    groupOf(7, "postgres: dps dps_bench_saga 127.0.0.1(40312) idle", services),
    "postgres (dps_bench_saga)",
  );
  assert.equal(groupOf(8, "postgres: walwriter", services), "postgres (background)");
  assert.equal(groupOf(9, "/usr/bin/redis-server 127.0.0.1:56379", services), "redis");
  assert.equal(groupOf(10, "bash -c something else", services), null);
});

/** A service that answers a POST with PENDING and a GET with COMPLETED, recording every call. */
function fakeTarget(wait_s?: number) {
  const calls: Array<{ method: string; path: string; headers: Record<string, string> }> = [];
  const api = {
    async call(method: string, path: string, headers: Record<string, string>) {
      calls.push({ method, path, headers });
      const status = method === "POST" ? "PENDING" : "COMPLETED";
      return { status: method === "POST" ? 201 : 200, body: { data: { transaction: { id: "t1", status } } } };
    },
  };
  const target = {
    api: api as unknown as ApiClient,
    tokenFor: async () => "token",
    amount_max_minor: 10,
    final_timeout_ms: 5_000,
    ...(wait_s === undefined ? {} : { wait_s }),
  };
  return { target, calls };
}

test("with wait_s the client reads once with Prefer: wait; without it, it polls without the header", async () => {
  const waiting = fakeTarget(10);
  const done = await countedLoop(
    waiting.target,
    { wallets: [1, 2], hot_share: 0 },
    { concurrency: 2, transfers: 4 },
  );
  assert.equal(done.completed, 4);
  const gets = waiting.calls.filter((c) => c.method === "GET");
  assert.equal(gets.length, 4);
  for (const get of gets) assert.equal(get.headers.prefer, "wait=10");

  const polling = fakeTarget();
  await countedLoop(polling.target, { wallets: [1, 2], hot_share: 0 }, { concurrency: 1, transfers: 2 });
  for (const get of polling.calls.filter((c) => c.method === "GET"))
    assert.equal(get.headers.prefer, undefined);
});
