/**
 * Waiting reads (`Prefer: wait=N` on GET /transactions/:id) through the public API, with two
 * copies of transaction-service: the stack's, and a second one started here with the same
 * environment on another port. Transfers are held PENDING by stopping the ledger (user-service):
 * accepted, not yet debited; starting it again lets the sweep of either copy complete them.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { createPool } from "#packages/pg/index.ts";
import { bearer, createUser, settled, type TestUser, transfer, uniqueName, urls } from "./api.ts";
import { type SecondCopy, startSecondCopy } from "./second-copy.ts";

const control = process.env.TEST_STACK_CONTROL_URL ?? "";

async function controlService(name: string, action: "stop" | "start"): Promise<void> {
  const response = await fetch(`${control}/services/${name}/${action}`, {
    method: "POST",
    headers: { authorization: `Bearer ${process.env.CONTROL_TOKEN ?? ""}` },
    signal: AbortSignal.timeout(120_000),
  });
  assert.equal(response.status, 200, `${action} ${name}: ${await response.text()}`);
}

interface Timed {
  status: number;
  applied: string | null;
  transaction: { id: string; status: string };
  elapsed_ms: number;
}

/** A read that may be held up to 30 s: longer than api.ts's `call` allows. */
async function read(base: string, id: string, token: string, prefer?: string): Promise<Timed> {
  const headers: Record<string, string> = bearer(token);
  if (prefer !== undefined) headers.prefer = prefer;
  const started = Date.now();
  const response = await fetch(`${base}/transactions/${id}`, {
    headers,
    signal: AbortSignal.timeout(60_000),
  });
  // biome-ignore lint/suspicious/noExplicitAny: free-form JSON
  const body: any = await response.json();
  assert.equal(response.status, 200, JSON.stringify(body));
  return {
    status: response.status,
    applied: response.headers.get("preference-applied"),
    transaction: body.data.transaction,
    elapsed_ms: Date.now() - started,
  };
}

describe("waiting reads", () => {
  let a: TestUser;
  let b: TestUser;
  before(async () => {
    a = await createUser(1_000_000);
    b = await createUser(0);
  });

  it("answer a final transfer at once, with Preference-Applied; without the preference, no header", async () => {
    const sent = await transfer(
      { source_user_id: a.id, dest_user_id: b.id, amount: 10 },
      uniqueName("w"),
      a.token,
    );
    assert.equal(sent.status, 201, JSON.stringify(sent.body));
    const id = sent.body.data.transaction.id;
    await settled(id, a.token);
    const waited = await read(urls.transaction, id, a.token, "wait=20");
    assert.equal(waited.transaction.status, "COMPLETED");
    assert.equal(waited.applied, "wait=20");
    assert.ok(waited.elapsed_ms < 10_000, `took ${waited.elapsed_ms} ms`);
    const plain = await read(urls.transaction, id, a.token);
    assert.equal(plain.applied, null);
    const capped = await read(urls.transaction, id, a.token, "wait=120");
    assert.equal(capped.applied, "wait=30", "N is capped at 30 seconds");
  });

  describe("while transfers are PENDING", () => {
    let second: SecondCopy | undefined;
    let ledgerStopped = false;

    before(async () => {
      second = await startSecondCopy();
      await controlService("user-service", "stop");
      ledgerStopped = true;
    });

    after(async () => {
      if (ledgerStopped) await controlService("user-service", "start");
      await second?.stop();
    });

    it("time out with the current status; are bounded per caller; answer on any copy as soon as final", async () => {
      const ids: string[] = [];
      for (let i = 0; i < 4; i++) {
        const sent = await transfer(
          { source_user_id: a.id, dest_user_id: b.id, amount: 100 + i },
          uniqueName("w"),
          a.token,
        );
        assert.equal(sent.status, 201, JSON.stringify(sent.body));
        assert.equal(sent.body.data.transaction.status, "PENDING");
        ids.push(sent.body.data.transaction.id);
      }
      const [first] = ids as [string];
      const base2 = second?.base ?? "";

      // The wait runs out: the current status, with Preference-Applied.
      const timedOut = await read(base2, first, a.token, "wait=2");
      assert.equal(timedOut.transaction.status, "PENDING");
      assert.equal(timedOut.applied, "wait=2");
      assert.ok(timedOut.elapsed_ms >= 1_900, `answered after ${timedOut.elapsed_ms} ms`);

      // Ten waits per caller per copy (the default): the eleventh is answered at once, without
      // the header; another caller (the payee) still waits.
      const held = Array.from({ length: 10 }, () => read(urls.transaction, first, a.token, "wait=30"));
      await sleep(1_000);
      const refused = await read(urls.transaction, first, a.token, "wait=30");
      assert.equal(refused.applied, null, "over the per-caller bound");
      assert.equal(refused.transaction.status, "PENDING");
      assert.ok(refused.elapsed_ms < 5_000, `refused after ${refused.elapsed_ms} ms`);
      const payee = await read(urls.transaction, first, b.token, "wait=1");
      assert.equal(payee.applied, "wait=1");

      // Every copy's listening connection is cut (as by a PostgreSQL restart): each reconnects
      // and still hears the notices below.
      const pool = createPool(process.env.TEST_SAGA_DATABASE_URL ?? "", { max: 1, application_name: "test" });
      try {
        const cut = await pool.query(
          "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
          ["transaction-service final status listener"],
        );
        assert.equal(cut.rowCount, 2, "one listener per copy");
      } finally {
        await pool.end();
      }
      await sleep(2_000);

      // Waits on the second copy; the ledger starts again and whichever copy's sweep retries the
      // debits completes the transfers: every wait answers before it runs out, final.
      const across = ids.map((id) => read(base2, id, a.token, "wait=30"));
      await sleep(500);
      await controlService("user-service", "start");
      ledgerStopped = false;
      for (const answer of await Promise.all([...across, ...held])) {
        assert.equal(answer.transaction.status, "COMPLETED", JSON.stringify(answer));
        assert.equal(answer.applied, "wait=30");
        assert.ok(answer.elapsed_ms < 29_000, `answered after ${answer.elapsed_ms} ms: the wait ran out`);
      }
    });
  });
});
