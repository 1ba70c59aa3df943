import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { copySpecs, haproxyConfig } from "../balancer.ts";
import { type ServiceName, serviceNames, stackEnv } from "../env.ts";
import { serviceSpecs } from "../supervisor.ts";

const env = stackEnv({ HOST: "127.0.0.1" });

describe("service copies behind the balancer", () => {
  it("moves copy k of each service, public and internal listener, by 100·k", () => {
    const copies = copySpecs(serviceSpecs(env, serviceNames), 2);
    const tx = copies.filter((c) => c.name.startsWith("transaction-service-"));
    assert.deepEqual(
      tx.map((c) => [
        c.name,
        c.port,
        c.env.TRANSACTION_SERVICE_PORT,
        c.env.TRANSACTION_SERVICE_INTERNAL_PORT,
      ]),
      [
        ["transaction-service-1", 8103, "8103", "9103"],
        ["transaction-service-2", 8203, "8203", "9203"],
      ],
    );
    // The other services are still reached at their usual (balanced) addresses.
    assert.equal(tx[0]?.env.USER_SERVICE_INTERNAL_URL, "http://127.0.0.1:9000");
    assert.equal(copies.length, 8);
  });

  it("balances the usual ports over the copies that pass GET /health/ready", () => {
    const config = haproxyConfig(env, serviceNames as readonly ServiceName[], 2);
    for (const port of [8000, 8001, 8002, 8003, 9000, 9001, 9002, 9003]) {
      assert.match(config, new RegExp(`bind 127\\.0\\.0\\.1:${port}\\n`));
      assert.match(config, new RegExp(`server copy1 127\\.0\\.0\\.1:${port + 100} check`));
      assert.match(config, new RegExp(`server copy2 127\\.0\\.0\\.1:${port + 200} check`));
    }
    assert.equal(config.match(/option httpchk GET \/health\/ready$/gm)?.length, 8);
  });

  it("retries only a failed connection, never a request a copy may have acted on", () => {
    const config = haproxyConfig(env, serviceNames as readonly ServiceName[], 2);
    const retryOn = config.match(/^\s*retry-on (.*)$/gm) ?? [];
    assert.deepEqual(
      retryOn.map((line) => line.trim()),
      ["retry-on conn-failure"],
    );
    assert.match(config, /option redispatch/);
  });
});
