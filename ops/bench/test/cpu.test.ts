import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { cpuPerTransfer_ms } from "../cpu.ts";

describe("bench CPU per transfer", () => {
  it("gives the whole machine's and the run's own processes' CPU per completed transfer, in ms", () => {
    // 1.5 cores busy at 100 tps: 15 ms; the processes used 12 s of CPU over 10 s: 1.2 cores, 12 ms.
    assert.deepEqual(
      cpuPerTransfer_ms({
        tps: 100,
        machine_cores: 1.5,
        processes_cpu_s: { "transaction-service": 8, kafka: 4 },
        window_s: 10,
      }),
      { cpu_ms_per_transfer: 15, cpu_ms_per_transfer_processes: 12 },
    );
  });

  it("has no figure when nothing completed", () => {
    assert.deepEqual(cpuPerTransfer_ms({ tps: 0, machine_cores: 1, processes_cpu_s: {}, window_s: 10 }), {
      cpu_ms_per_transfer: null,
      cpu_ms_per_transfer_processes: null,
    });
  });
});
