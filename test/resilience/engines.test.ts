/**
 * Engines are supervised like services: each engine killed with SIGKILL (through the control
 * server's kill9, as a crash would) is started again by the stack within seconds, from its data on
 * disk and nobody asking; the services reconnect, and a transfer sent through the outage ends
 * final with the money where it belongs.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { balanceOf, call, createUser, settled, transfer, uniqueName, urls } from "../integration/api.ts";

const controlUrl = process.env.TEST_STACK_CONTROL_URL ?? "";
const control = { authorization: `Bearer ${process.env.CONTROL_TOKEN ?? ""}` };
const back_timeout_ms = 120_000;

interface EngineState {
  name: string;
  pid: number | null;
  healthy: boolean;
}

async function engine(name: string): Promise<EngineState> {
  const answer = await call("GET", `${controlUrl}/status`, { headers: control });
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  const found = (answer.body.engines as EngineState[]).find((e) => e.name === name);
  assert.ok(found, `no engine ${name} in ${JSON.stringify(answer.body)}`);
  return found;
}

async function until(
  what: string | (() => string),
  check: () => Promise<boolean>,
  timeout_ms = back_timeout_ms,
): Promise<void> {
  const deadline = Date.now() + timeout_ms;
  for (;;) {
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline)
      assert.fail(`${typeof what === "string" ? what : what()} after ${timeout_ms} ms`);
    await sleep(250);
  }
}

/** A transfer sent through the outage: connection errors, 5xx and 409 are retried with the same key. */
async function transferThrough(
  from: { id: number; token: string },
  to_id: number,
  amount: number,
): Promise<string> {
  const key = uniqueName("engine-crash");
  let last = "";
  await until(
    () => `the transfer was never accepted (last answer: ${last})`,
    async () => {
      const answer = await transfer(
        { source_user_id: from.id, dest_user_id: to_id, amount },
        key,
        from.token,
      );
      last = `${answer.status} ${JSON.stringify(answer.body)}`;
      if (answer.status === 201) return true;
      if (answer.status < 500 && answer.status !== 409) assert.fail(`unexpected ${last}`);
      return false;
    },
    back_timeout_ms,
  );
  const again = await transfer({ source_user_id: from.id, dest_user_id: to_id, amount }, key, from.token);
  return again.body?.data?.transaction?.id ?? again.body?.details?.transaction?.id;
}

describe("engines killed with SIGKILL come back", {
  skip: controlUrl === "" ? "no control server" : false,
  timeout: 900_000,
}, () => {
  for (const name of ["redis", "postgres", "ferretdb", "kafka"]) {
    it(`${name}`, async () => {
      const a = await createUser(10_000);
      const b = await createUser(0);
      const before = await engine(name);
      assert.ok(before.healthy && before.pid !== null, `${name} is not up before the test`);

      const killed = await call("POST", `${controlUrl}/engines/${name}/kill9`, { headers: control });
      assert.equal(killed.status, 200, JSON.stringify(killed.body));
      const id = await transferThrough(a, b.id, 2_500);

      await until(`${name} was not started again`, async () => {
        const now = await engine(name);
        return now.healthy && now.pid !== null && now.pid !== before.pid;
      });
      for (const url of Object.values(urls))
        await until(`${url} not healthy`, async () => (await call("GET", `${url}/health`)).status === 200);
      const final = await settled(id, a.token, back_timeout_ms);
      assert.equal(final.status, "COMPLETED", JSON.stringify(final));
      assert.equal(await balanceOf(a.id), 7_500);
      assert.equal(await balanceOf(b.id), 2_500);
    });
  }
});
