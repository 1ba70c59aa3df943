/**
 * The recovery sweep: every interval, claim a bounded batch of unfinished transfers whose step
 * is overdue (a crash, a lost answer, an outage) and drive each one on. Any instance may run
 * it; SKIP LOCKED keeps two instances off the same rows. This is what makes every transfer
 * terminate (I4) whatever process died at whatever step.
 */
import type { Logger } from "#packages/log/index.ts";
import { InvariantError } from "#packages/runtime/assert.ts";
import { runConcurrently, runLoop } from "#packages/runtime/loops.ts";
import { contextFromRow, withSpan } from "#packages/tracing/index.ts";
import { isParkable } from "./machine.ts";
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
  const stop = new AbortController();
  const recover = (transfer: DueTransfer) =>
    inTransferTrace(transfer, async () => {
      try {
        await options.runner.recover(transfer);
      } catch (error) {
        // A broken invariant is a bug, not an outage: retrying it would retry into money.
        if (error instanceof InvariantError && (await parked(options, transfer.id, error))) return;
        options.logger.warn(
          { err: error, transfer_id: transfer.id, state: transfer.state },
          "recovery step failed",
        );
      }
    });
  const loop = runLoop({
    signal: stop.signal,
    idle_ms: options.interval_ms,
    // A failed claim waits the interval, as an empty one does.
    retry_ms: () => options.interval_ms,
    onError: (error) => options.logger.warn({ err: error }, "sweep failed"),
    tick: async () => {
      const due = await options.store.claimDue(options.batch_max, {
        step_base_ms: options.backoff_base_ms,
        step_cap_ms: options.backoff_cap_ms,
        resend_base_ms: options.resend_base_ms,
        resend_cap_ms: options.resend_cap_ms,
      });
      await runConcurrently(due, options.concurrency, recover);
      return due.length < options.batch_max ? "idle" : "busy";
    },
  });
  return {
    async stop() {
      stop.abort();
      await loop.done;
    },
  };
}

/**
 * Park the transfer whose step broke an invariant where it now stands (re-read: the failed call
 * may have moved it first), so no driver retries it into money movement. False when it is not
 * in a state that parks, or parking itself failed; the sweep then treats it as any failure.
 */
async function parked(
  options: { store: SagaStore; runner: SagaRunner; logger: Logger },
  id: string,
  error: InvariantError,
): Promise<boolean> {
  try {
    const current = await options.store.get(id);
    if (current === null || !isParkable(current.state)) {
      options.logger.error(
        { err: error, transfer_id: id },
        "a broken invariant in a state that does not park",
      );
      return false;
    }
    const parked = await options.store.park(id, current.state, error.message);
    if (parked === null) return false;
    options.runner.onTransition(parked);
    options.logger.error(
      { err: error, transfer_id: id, from: current.state },
      "transfer parked: a broken invariant stopped its step; an operator must re-drive it",
    );
    return true;
  } catch (parking) {
    options.logger.warn({ err: parking, transfer_id: id }, "parking failed");
    return false;
  }
}

/** A resumed transfer stays in the trace of the request that created it: its log lines and messages say so. */
function inTransferTrace(transfer: DueTransfer, recover: () => Promise<void>): Promise<void> {
  const spec = { parent: contextFromRow(transfer.traceparent), attributes: { transfer_id: transfer.id } };
  return withSpan("saga recover", spec, recover);
}
