import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { compareStacks, cpuPerTransfer_us } from "../cluster.ts";
import type { Case } from "../main.ts";
import { aCase, results } from "./cases.ts";

describe("bench --cluster: the two stacks side by side", () => {
  const dir = mkdtempSync(join(tmpdir(), "bench-cluster-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("gives CPU per transfer from the CPU seconds, the window and the throughput", () => {
    // 1 CPU second over a 2 s window is half a core; at 100 transfers/s, 5,000 µs each.
    const per = cpuPerTransfer_us(aCase("c", 16, 100, { "transaction-service": 1 }));
    assert.equal(per.get("transaction-service"), 5_000);
    assert.equal(per.get("whole machine"), 15_000);
  });

  it("writes one report with each case and each process of both stacks", async () => {
    const stacks = {
      single: results(100, { "transaction-service": 1, kafka: 0.2 }),
      cluster: results(80, { "transaction-service": 1.2, kafka: 0.4, balancer: 0.16 }),
    };
    for (const [name, r] of Object.entries(stacks)) {
      mkdirSync(join(dir, name), { recursive: true });
      writeFileSync(join(dir, name, "results.json"), JSON.stringify(r));
    }
    await compareStacks(dir);
    const report = readFileSync(join(dir, "report.md"), "utf8");
    assert.match(report, /\| 1,000 wallets \| 16 \| 100\.0 \| 80\.0 \| 0\.80 \|/);
    assert.match(report, /\| 1,000 wallets, hot \| 16 \| 25\.0 \| 20\.0 \| 0\.80 \|/);
    // transaction-service: 5,000 µs alone, 7,500 µs as two copies; the balancer only in the cluster.
    assert.match(report, /\| transaction-service \| 5,000 \| 7,500 \| \+2,500 \|/);
    assert.match(report, /\| kafka \| 1,000 \| 2,500 \| \+1,500 \|/);
    assert.match(report, /\| balancer \| 0 \| 1,000 \| \+1,000 \|/);
    assert.match(report, /\| \*\*whole machine\*\* \| 15,000 \| 18,750 \| \+3,750 \|/);
    // No errors in either stack: no list of kinds.
    assert.doesNotMatch(report, /Errors by kind/);
  });

  it("says the kinds of the errors under the table, per case and stack", async () => {
    const single = results(100, {});
    const cluster = results(80, {});
    const peak = cluster.sweep[1] as Case;
    peak.ours = { ...peak.ours, errors: 8, error_kinds: { TIMEOUT: 3, "HTTP 503 not JSON": 5 } };
    const kinds_dir = join(dir, "kinds");
    for (const [name, r] of Object.entries({ single, cluster })) {
      mkdirSync(join(kinds_dir, name), { recursive: true });
      writeFileSync(join(kinds_dir, name, "results.json"), JSON.stringify(r));
    }
    await compareStacks(kinds_dir);
    const report = readFileSync(join(kinds_dir, "report.md"), "utf8");
    assert.match(report, /\| 1,000 wallets \| 16 \|.*\| 0 \/ 8 \|/);
    assert.match(
      report,
      /- 1,000 wallets, 16 clients: single none; cluster HTTP 503 not JSON ×5, TIMEOUT ×3\n/,
    );
    // Only the case with errors is listed.
    assert.doesNotMatch(report, /- 1,000 wallets, 4 clients:/);
  });
});
