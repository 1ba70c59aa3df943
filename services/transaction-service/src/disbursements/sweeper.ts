/**
 * The disbursement sweep: funds every disbursement left `created` past its time (its creator
 * crashed, or the ledger did not answer). Any instance may run it; SKIP LOCKED keeps two off the
 * same rows, and funding is idempotent anyway. Items then belong to the transfer sweep.
 */
import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "#packages/log/index.ts";
import type { DisbursementFunder } from "./funding.ts";
import type { DisbursementStore } from "./store.ts";

export function startDisbursementSweeper(options: {
  store: DisbursementStore;
  funder: DisbursementFunder;
  logger: Logger;
  interval_ms: number;
  batch_max: number;
  backoff_base_ms: number;
  backoff_cap_ms: number;
}): { stop(): Promise<void> } {
  let stopped = false;
  const loop = async () => {
    while (!stopped) {
      try {
        const due = await options.store.claimUnfunded(options.batch_max, {
          base_ms: options.backoff_base_ms,
          cap_ms: options.backoff_cap_ms,
        });
        // One at a time: a funding is one large ledger statement already.
        for (const disbursement of due) {
          if (stopped) break;
          await options.funder.fund(disbursement).catch((error: unknown) => {
            options.logger.warn(
              { err: error, disbursement_id: disbursement.id },
              "disbursement funding failed",
            );
          });
        }
      } catch (error) {
        options.logger.warn({ err: error }, "disbursement sweep failed");
      }
      if (!stopped) await sleep(options.interval_ms);
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
