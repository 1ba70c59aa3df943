/**
 * Kill -9 at the worst moment of each step, deterministically: a service is armed to SIGKILL
 * itself right after an effect and before its record (crash points, FAULT_INJECTION only), the
 * supervisor restarts it, and recovery must finish the transfer with the money right.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import {
  asAdmin,
  balanceOf,
  call,
  createUser,
  internalUrls,
  ledgerAudit,
  settled,
  type TestUser,
  transfer,
  uniqueName,
  urls,
} from "../integration/api.ts";

type Service = "transaction" | "command";

async function arm(service: Service, point: string): Promise<void> {
  await healthy(service);
  const answer = await call("PUT", `${internalUrls[service]}/ops/crash`, {
    body: { point },
    headers: asAdmin(),
  });
  assert.equal(answer.status, 200, `arming ${point}: ${JSON.stringify(answer.body)}`);
}

async function healthy(service: Service, timeout_ms = 60_000): Promise<void> {
  const deadline = Date.now() + timeout_ms;
  for (;;) {
    const answer = await call("GET", `${urls[service]}/health`).catch(() => null);
    if (answer?.status === 200) return;
    if (Date.now() > deadline) assert.fail(`${service} not healthy after ${timeout_ms} ms`);
    await sleep(250);
  }
}

/** Send a transfer, riding out the crash: connection errors, 5xx and 409 in-progress are retried with the same key. */
async function transferThroughCrash(a: TestUser, b: TestUser, amount: number): Promise<string> {
  const key = uniqueName("crash");
  const deadline = Date.now() + 60_000;
  for (;;) {
    const answer = await transfer({ source_user_id: a.id, dest_user_id: b.id, amount }, key, a.token).catch(
      () => null,
    );
    if (answer !== null && answer.status === 201) return answer.body.data.transaction.id;
    if (answer !== null && answer.status < 500 && answer.status !== 409) {
      assert.fail(`unexpected ${answer.status}: ${JSON.stringify(answer.body)}`);
    }
    if (Date.now() > deadline) assert.fail("the transfer was never accepted");
    await sleep(250);
  }
}

/** Poll until final, riding out the moment the armed service dies (connection errors are retried). */
// biome-ignore lint/suspicious/noExplicitAny: free-form JSON
async function settledThroughCrash(id: string, token: string, timeout_ms = 90_000): Promise<any> {
  const deadline = Date.now() + timeout_ms;
  for (;;) {
    try {
      return await settled(id, token, Math.max(1_000, deadline - Date.now()));
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await sleep(250);
    }
  }
}

async function expectMoney(a: TestUser, b: TestUser, a_balance: number, b_balance: number): Promise<void> {
  assert.equal(await balanceOf(a.id), a_balance);
  assert.equal(await balanceOf(b.id), b_balance);
  const audit = await ledgerAudit();
  assert.equal(audit.consistent, true, JSON.stringify(audit));
  assert.equal(audit.clearing_balance, audit.held_amount);
}

describe("crash at every step", { timeout: 600_000 }, () => {
  it("after the transfer (debit and credit in one ledger step), before the saga records it", async () => {
    const a = await createUser(1_000);
    const b = await createUser(50);
    await arm("transaction", "after_transfer");
    const id = await transferThroughCrash(a, b, 300);
    await healthy("transaction");
    // Each party sees their own balance before the transfer (source_init_bal, dest_init_bal).
    const done = await settledThroughCrash(id, b.token);
    assert.equal(done.status, "COMPLETED");
    assert.equal(done.dest_init_bal, 50, "the retried step returns the first step's balances");
    assert.equal((await settledThroughCrash(id, a.token)).source_init_bal, 1_000);
    await expectMoney(a, b, 700, 350);
  });

  it("after a refused transfer (refunded within its step), before the saga records it", async () => {
    const a = await createUser(1_000);
    // No room under 2^53-1 for the credit: the step refunds its debit and answers dest_unavailable.
    const b = await createUser(Number.MAX_SAFE_INTEGER - 5);
    await arm("transaction", "after_transfer");
    const id = await transferThroughCrash(a, b, 300);
    await healthy("transaction");
    const done = await settledThroughCrash(id, a.token);
    assert.equal(done.status, "FAILED");
    assert.equal(done.failure_reason, "dest_unavailable");
    await expectMoney(a, b, 1_000, Number.MAX_SAFE_INTEGER - 5);
  });

  it("after the outbox reached Kafka, before its rows are deleted (the command goes out twice)", async () => {
    const a = await createUser(1_000);
    const b = await createUser(0);
    await arm("transaction", "after_outbox_send");
    const id = await transferThroughCrash(a, b, 300);
    await healthy("transaction");
    const done = await settledThroughCrash(id, a.token);
    assert.equal(done.status, "COMPLETED");
    await expectMoney(a, b, 700, 300);
  });

  it("after the record is written, before its event and offset (the command is redelivered)", async () => {
    const a = await createUser(1_000);
    const b = await createUser(0);
    await arm("command", "after_record_write");
    const id = await transferThroughCrash(a, b, 300);
    await healthy("command");
    const done = await settledThroughCrash(id, a.token);
    assert.equal(done.status, "COMPLETED");
    await expectMoney(a, b, 700, 300);
    const record = await call("GET", `${urls.query}/transactions/${id}`, { headers: asAdmin() });
    assert.equal(record.body.data.transaction.status, "COMPLETED");
  });
});
