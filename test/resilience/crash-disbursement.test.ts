/**
 * Kill -9 of transaction-service in a batch's worst moments: right after the ledger's funding
 * commit (the items' money is in clearing, the saga has not recorded it), in the middle of
 * the items' credits, and in an item's refund. The supervisor restarts it; the sweeps must finish every item, the batch's
 * status must agree with its items, and the money must be right.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import {
  asAdmin,
  balanceOf,
  bearer,
  call,
  createUser,
  internalUrls,
  ledgerAudit,
  type TestUser,
  uniqueName,
  urls,
} from "../integration/api.ts";

async function healthy(timeout_ms = 60_000): Promise<void> {
  const deadline = Date.now() + timeout_ms;
  for (;;) {
    const answer = await call("GET", `${urls.transaction}/health`).catch(() => null);
    if (answer?.status === 200) return;
    if (Date.now() > deadline) assert.fail(`transaction-service not healthy after ${timeout_ms} ms`);
    await sleep(250);
  }
}

async function arm(point: string): Promise<void> {
  await healthy();
  const answer = await call("PUT", `${internalUrls.transaction}/ops/crash`, {
    body: { point },
    headers: asAdmin(),
  });
  assert.equal(answer.status, 200, `arming ${point}: ${JSON.stringify(answer.body)}`);
}

/** POST the batch, riding out the crash: connection errors, 5xx and 409 are retried with the same key. */
async function disburseThroughCrash(payer: TestUser, items: unknown[]): Promise<string> {
  const key = uniqueName("crash-batch");
  const deadline = Date.now() + 90_000;
  for (;;) {
    const answer = await call("POST", `${urls.transaction}/disbursements`, {
      body: { source_user_id: payer.id, items },
      headers: { ...bearer(payer.token), "idempotency-key": key },
    }).catch(() => null);
    if (answer?.status === 201) return answer.body.data.disbursement.id;
    if (answer !== null && answer.status < 500 && answer.status !== 409) {
      assert.fail(`unexpected ${answer.status}: ${JSON.stringify(answer.body)}`);
    }
    if (Date.now() > deadline) assert.fail("the disbursement was never accepted");
    await sleep(500);
  }
}

// biome-ignore lint/suspicious/noExplicitAny: free-form JSON
async function finalThroughCrash(id: string, token: string, timeout_ms = 120_000): Promise<any> {
  const deadline = Date.now() + timeout_ms;
  for (;;) {
    const answer = await call("GET", `${urls.transaction}/disbursements/${id}`, {
      headers: bearer(token),
    }).catch(() => null);
    if (answer?.status === 200 && answer.body.data.disbursement.status !== "PENDING") {
      return answer.body.data.disbursement;
    }
    if (Date.now() > deadline) assert.fail(`disbursement ${id} not final after ${timeout_ms} ms`);
    await sleep(500);
  }
}

async function itemStatuses(id: string, token: string): Promise<string[]> {
  const answer = await call("GET", `${urls.transaction}/disbursements/${id}/items?limit=100`, {
    headers: bearer(token),
  });
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  return answer.body.data.items.map((i: { status: string }) => i.status);
}

async function runThroughCrash(point: string): Promise<void> {
  const payer = await createUser(10_000);
  const payees = [await createUser(), await createUser()];
  const items = Array.from({ length: 20 }, (_, i) => ({
    dest_user_id: (payees[i % 2] as TestUser).id,
    amount: 100,
    reference: `item-${i}`,
  }));
  await arm(point);
  const id = await disburseThroughCrash(payer, items);
  await healthy();
  const done = await finalThroughCrash(id, payer.token);
  assert.equal(done.status, "COMPLETED", JSON.stringify(done));
  assert.deepEqual(done.counts, { pending: 0, completed: 20, failed: 0 });
  assert.equal(done.amount_completed, 2_000);
  const statuses = await itemStatuses(id, payer.token);
  assert.equal(statuses.length, 20);
  assert.ok(
    statuses.every((s) => s === "COMPLETED"),
    statuses.join(","),
  );
  assert.equal(await balanceOf(payer.id), 8_000);
  assert.equal((await balanceOf(payees[0]?.id ?? 0)) + (await balanceOf(payees[1]?.id ?? 0)), 2_000);
  const audit = await ledgerAudit();
  assert.equal(audit.consistent, true, JSON.stringify(audit));
}

describe("crash in a batch disbursement", { timeout: 600_000 }, () => {
  it("after the funding commit, before the saga records it", async () => {
    await runThroughCrash("after_fund");
  });

  it("during the items' credits", async () => {
    await runThroughCrash("after_post");
  });

  it("during an item's refund (its payee has no room for the credit)", async () => {
    const payer = await createUser(10_000);
    const payee = await createUser();
    // No room under 2^53-1: this payee's credits are refused, and their items refunded.
    const full = await createUser(Number.MAX_SAFE_INTEGER - 5);
    const items = Array.from({ length: 10 }, (_, i) => ({
      dest_user_id: i % 2 === 0 ? payee.id : full.id,
      amount: 100,
      reference: `item-${i}`,
    }));
    await arm("after_void");
    const id = await disburseThroughCrash(payer, items);
    await healthy();
    const done = await finalThroughCrash(id, payer.token);
    assert.equal(done.status, "PARTIALLY_COMPLETED", JSON.stringify(done));
    assert.deepEqual(done.counts, { pending: 0, completed: 5, failed: 5 });
    assert.equal(await balanceOf(payer.id), 9_500);
    assert.equal(await balanceOf(payee.id), 500);
    assert.equal(await balanceOf(full.id), Number.MAX_SAFE_INTEGER - 5);
    const audit = await ledgerAudit();
    assert.equal(audit.consistent, true, JSON.stringify(audit));
  });
});
