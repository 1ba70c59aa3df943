/**
 * The chaos workload's disbursements and webhooks, small: batches sent while transaction-service
 * (saga and webhook dispatcher) is killed with SIGKILL; every batch must end final and agree with
 * its items, every event must reach its parties' endpoints at least once with a valid
 * signature, and I1-I6 must hold.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { chaosOptionsFromEnv, formatChaos, runChaos } from "../../ops/chaos.ts";

describe("chaos with batches", () => {
  it("every batch ends final, agreeing with its items, and every webhook arrives signed, through a SIGKILL", {
    timeout: 600_000,
  }, async (t) => {
    const lines: string[] = [];
    // The run's log (faults and their recovery) goes into the report however the run ends.
    const report = await runChaos(
      chaosOptionsFromEnv(process.env, {
        transfers: 40,
        concurrency: 2,
        faults: 1,
        batches: 4,
        batch_items: 20,
        log: (line) => lines.push(line),
      }),
    ).finally(() => t.diagnostic(lines.join("\n")));
    t.diagnostic(formatChaos(report));
    assert.deepEqual(report.violations, []);
    assert.ok(report.batches_sent >= 4, `only ${report.batches_sent} batches sent`);
    assert.equal(report.batches_final, report.batches_sent);
    assert.ok(report.webhooks !== null, "the run registered no webhooks");
    assert.ok(report.webhooks.events_expected > report.batches_sent, JSON.stringify(report.webhooks));
    assert.equal(report.webhooks.events_delivered, report.webhooks.events_expected);
    assert.equal(report.webhooks.unverified, 0);
    assert.equal(report.client_total_after, report.client_total_before);
    assert.ok(report.audit.ok, report.audit.violations.join("\n"));
  });
});
