/**
 * A short bank test under faults (the long one is `npm run chaos`): at least 500 transfers
 * while each service and each engine (Kafka, FerretDB, PostgreSQL, Redis) is killed with SIGKILL
 * and brought back by its supervisor; then every transfer must be final, the wallets must hold
 * what they held, no key may have made two transfers, and the audit must pass.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { chaosOptionsFromEnv, formatChaos, runChaos } from "../../ops/chaos.ts";

describe("chaos", () => {
  it("keeps I1-I6 through SIGKILLs of every service and engine", { timeout: 900_000 }, async (t) => {
    const lines: string[] = [];
    // The run's log (faults and their recovery) goes into the report however the run ends.
    const report = await runChaos(
      chaosOptionsFromEnv(process.env, {
        transfers: 500,
        faults: 8, // the first round: every engine and every service SIGKILLed once
        log: (line) => lines.push(line),
      }),
    ).finally(() => t.diagnostic(lines.join("\n")));
    t.diagnostic(formatChaos(report));
    assert.ok(report.sent >= 500, `only ${report.sent} transfers sent`);
    assert.ok(report.faults.length >= 6, `only ${report.faults.length} faults injected`);
    assert.deepEqual(report.violations, []);
    assert.equal(report.client_total_after, report.client_total_before);
    assert.ok(report.audit.ok, report.audit.violations.join("\n"));
    assert.equal(report.completed + report.failed, report.accepted + report.refused);
  });
});
