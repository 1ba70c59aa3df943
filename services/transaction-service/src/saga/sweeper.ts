/**
 * The recovery sweep: every interval, claim a bounded batch of unfinished transfers whose step
 * is overdue (a crash, a lost answer, an outage) and drive each one on. Any instance may run
 * it; SKIP LOCKED keeps two instances off the same rows. This is what makes every transfer
 * terminate (I4) whatever process died at whatever step.
 */
import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "#packages/log/index.ts";
import { contextFromRow, withSpan } from "#packages/tracing/index.ts";
import type { SagaRunner } from "./runner.ts";
import type { DueTransfer, SagaStore } from "./store.ts";

export function startSweeper(options: {
  store: SagaStore;
  runner: SagaRunner;
  logger: Logger;
  interval_ms: number;
  batch_max: number;
  concurrency: number;
  backoff_base_ms: number;
  resend_base_ms: number;
  resend_cap_ms: number;
  backoff_cap_ms: number;
}): { stop(): Promise<void> } {
  let stopped = false;
  const loop = async () => {
    while (!stopped) {
      let claimed = 0;
      try {
        const due = await options.store.claimDue(options.batch_max, {
          step_base_ms: options.backoff_base_ms,
          step_cap_ms: options.backoff_cap_ms,
          resend_base_ms: options.resend_base_ms,
          resend_cap_ms: options.resend_cap_ms,
        });
        claimed = due.length;
        let next = 0;
        const worker = async () => {
          while (next < due.length) {
            const transfer = due[next++];
            if (transfer === undefined) break;
            await inTransferTrace(transfer, async () => {
              try {
                await options.runner.recover(transfer);
              } catch (error) {
                options.logger.warn(
                  { err: error, transfer_id: transfer.id, state: transfer.state },
                  "recovery step failed",
                );
              }
            });
          }
        };
        await Promise.all(Array.from({ length: Math.min(options.concurrency, due.length) }, worker));
      } catch (error) {
        options.logger.warn({ err: error }, "sweep failed");
      }
      if (claimed < options.batch_max && !stopped) await sleep(options.interval_ms);
    }
  };
  const done = loop();
  return {
    async stop() {
      stopped = true;
      await done;
    },
  };
}

/** A resumed transfer stays in the trace of the request that created it: its log lines and messages say so. */
function inTransferTrace(transfer: DueTransfer, recover: () => Promise<void>): Promise<void> {
  const spec = { parent: contextFromRow(transfer.traceparent), attributes: { transfer_id: transfer.id } };
  return withSpan("saga recover", spec, recover);
}
