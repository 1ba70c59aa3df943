/**
 * A collector that is away costs spans, never work: withSpan's function runs and answers as
 * usual, the failed exports are reported to the service (which logs them), and the last flush
 * gives up within its bound.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { startTracing, withSpan } from "../index.ts";
import { startOtlpReceiver } from "./otlp-receiver.ts";

describe("tracing with the collector away", () => {
  it("reports failed exports, keeps working and stops within its bound", async () => {
    // A port that was just listening and no longer is: every export is refused.
    const gone = await startOtlpReceiver();
    await gone.close();
    const errors: unknown[] = [];
    const tracing = await startTracing({
      service: "export-errors-test",
      env: { OTEL_EXPORTER_OTLP_ENDPOINT: gone.url },
      batch_delay_ms: 50,
      export_timeout_ms: 1_000,
      shutdown_timeout_ms: 1_500,
      on_export_error: (error) => errors.push(error),
    });
    try {
      const answer = await withSpan("step", { kind: "server" }, async () => 42);
      assert.equal(answer, 42);
      const deadline = Date.now() + 20_000;
      while (errors.length === 0 && Date.now() < deadline) await sleep(50);
      assert.ok(errors.length > 0, "a failed background export is reported");
    } finally {
      const started = Date.now();
      await tracing.shutdown().catch(() => {});
      assert.ok(Date.now() - started < 5_000, "shutdown stays within its bound");
    }
  });
});
