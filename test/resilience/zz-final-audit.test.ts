/**
 * The last test file (named to sort last): once every test before it is done, the system must be
 * quiet with the money right. No test may strand money: every transfer reaches COMPLETED or
 * FAILED, nothing is left held in clearing, and the full audit (`npm run audit -- --quiet`: I1,
 * I2, I5, I6 against the engines) passes. A transfer that never settles, or a hold that nobody
 * posts or voids, fails here even when the test that made it passed.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { createPool, type Pool } from "#packages/pg/index.ts";
import { runAudit } from "../../ops/audit.ts";

const env = {
  ledger_database_url: process.env.TEST_LEDGER_DATABASE_URL ?? "",
  saga_database_url: process.env.TEST_SAGA_DATABASE_URL ?? "",
  mongo_url: process.env.TEST_MONGO_URL ?? "",
  mongo_database: process.env.TEST_MONGO_DATABASE ?? "",
};
/**
 * Generous: a transfer whose record command was lost waits for the resend (RECORD_RESEND_MS,
 * 5 min by default) before it can finish.
 */
const QUIET_TIMEOUT_MS = 9 * 60_000;
const POLL_MS = 1_000;

let saga: Pool;

/** The transfers not yet final (at most 20, oldest first). */
async function unfinished(): Promise<Array<{ id: string; state: string; updated_at: Date }>> {
  const { rows } = await saga.query<{ id: string; state: string; updated_at: Date }>(
    `SELECT id, state, updated_at FROM transfers WHERE state NOT IN ('completed', 'failed')
      ORDER BY updated_at LIMIT 20`,
  );
  return rows;
}

describe("after every other test", {
  skip: Object.values(env).includes("") ? "the test stack's database URLs are not set" : false,
  timeout: QUIET_TIMEOUT_MS + 120_000,
}, () => {
  before(() => {
    saga = createPool(env.saga_database_url, { max: 1, application_name: "final-audit" });
  });
  after(async () => {
    await saga?.end();
  });

  it("every transfer is final, nothing is held in clearing, and the audit passes", async () => {
    const deadline = Date.now() + QUIET_TIMEOUT_MS;
    let open = await unfinished();
    while (open.length > 0 && Date.now() < deadline) {
      await sleep(POLL_MS);
      open = await unfinished();
    }
    assert.deepEqual(open, [], `transfers still in flight after ${QUIET_TIMEOUT_MS} ms`);

    const result = await runAudit({ ...env, quiet: true });
    assert.deepEqual(result.violations, []);
    assert.equal(result.ok, true);
    assert.equal(result.ledger.consistent, true, JSON.stringify(result.ledger));
    assert.equal(result.ledger.held_amount, "0", "money is left held in clearing");
    assert.equal(result.ledger.holds_by_state.held, 0, "holds are left neither posted nor voided");
    assert.equal(result.ledger.clearing_balance, "0");
    assert.equal(result.transfers.in_flight, 0);
  });
});
