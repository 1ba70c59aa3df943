/**
 * transaction-service built in this process by createApp on the test stack's engines (its saga
 * database, Kafka, Redis; the stack's user-service as the ledger), beside the stack's own copy:
 * one transfer through it moves the money and completes.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { loadConfig } from "#packages/config/index.ts";
import { listenBoth } from "#packages/http/server.ts";
import { createLogger } from "#packages/log/index.ts";
import { configShape } from "../../services/transaction-service/src/config.ts";
import { type App, type AppDeps, createApp, openDeps } from "../../services/transaction-service/src/main.ts";
import { balanceOf, bearer, call, createUser } from "./api.ts";
import { copyEnv } from "./second-copy.ts";

describe("transaction-service from createApp", () => {
  let deps: AppDeps;
  let app: App;
  let base: string;

  before(async () => {
    const { port, env } = await copyEnv(20);
    const config = loadConfig(configShape, env);
    deps = await openDeps(config, createLogger("transaction-service-in-process", "warn"));
    app = await createApp(deps);
    await listenBoth(app.listeners, {
      host: "127.0.0.1",
      port,
      internal_host: "127.0.0.1",
      internal_port: port + 1_000,
    });
    base = `http://127.0.0.1:${port}`;
  });

  after(async () => {
    for (const close of app?.closers ?? []) await close();
    await deps?.redis.quit();
    await deps?.pool.end();
  });

  it("takes a transfer and completes it", async () => {
    const a = await createUser(1_000);
    const b = await createUser(0);
    const made = await call("POST", `${base}/transactions/transfer`, {
      body: { source_user_id: a.id, dest_user_id: b.id, amount: 300 },
      headers: bearer(a.token),
    });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    const id: string = made.body.data.transaction.id;
    const deadline = Date.now() + 60_000;
    let status = made.body.data.transaction.status;
    while (status === "PENDING" && Date.now() < deadline) {
      await sleep(200);
      const read = await call("GET", `${base}/transactions/${id}`, { headers: bearer(a.token) });
      assert.equal(read.status, 200, JSON.stringify(read.body));
      status = read.body.data.transaction.status;
    }
    assert.equal(status, "COMPLETED");
    assert.equal(await balanceOf(a.id), 700);
    assert.equal(await balanceOf(b.id), 300);
  });
});
