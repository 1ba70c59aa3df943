/**
 * The two loops the services run everywhere, written once: a bounded worker pool over a list
 * (runConcurrently), and a stoppable background loop that waits when idle and backs off after a
 * failure (runLoop).
 */
import { assert } from "./assert.ts";
import { backoff_ms } from "./index.ts";

/**
 * Run `fn` over `items`, at most `concurrency_max` at once, each item once, taken in order.
 * After the first failure no new item is started; the calls in flight are awaited, then the first
 * error is thrown (so no call outlives the returned promise).
 */
export async function runConcurrently<T>(
  items: readonly T[],
  concurrency_max: number,
  fn: (item: T, index: number) => Promise<void>,
): Promise<void> {
  assert(Number.isInteger(concurrency_max), `concurrency_max ${concurrency_max} must be an integer`);
  assert(concurrency_max >= 1, `concurrency_max ${concurrency_max} must be at least 1`);
  let next = 0;
  let failure: { error: unknown } | null = null;
  const worker = async () => {
    while (failure === null && next < items.length) {
      const index = next++;
      try {
        await fn(items[index] as T, index);
      } catch (error) {
        failure ??= { error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency_max, items.length) }, worker));
  if (failure !== null) throw (failure as { error: unknown }).error;
}

/** What one round of a loop found: more work waiting (run again at once), or none (wait). */
export type TickResult = "busy" | "idle";

export interface LoopOptions {
  /** Aborting it stops the loop: the round in progress finishes, any wait ends at once. */
  signal: AbortSignal;
  /**
   * One round of work. Throwing counts a failure and waits retry_ms before the next round. A long
   * round (a consumer's whole life) calls `healthy()` once it works, so that its eventual failure
   * counts as the first of a series, not one more of the last.
   */
  tick(round: { healthy(): void }): Promise<TickResult>;
  /** The wait after an idle round, unless wake() is called. */
  idle_ms: number;
  /**
   * How long a round woken by wake() waits before it looks (default 0), so that work arriving
   * over that time is taken in one round: for loops whose work can trail its cause a little (the
   * outbox relay), fewer and fuller rounds cost less per item. A busy round's successor never waits.
   */
  gather_ms?: number;
  /** The wait after the n-th failure in a row (default: backoff_ms(n, 100, 5 000)). */
  retry_ms?: (failures: number) => number;
  /** Told about each failure (the loop's owner logs it). */
  onError(error: unknown, failures: number): void;
}

export interface Loop {
  /** Work has arrived: end the idle wait (the round then gathers), or run once more if a round is in progress. */
  wake(): void;
  /**
   * End the idle wait now, without gathering: for work that is already there and waits on the
   * round (a worker's freed slot). During a round it does nothing: the round's result decides.
   */
  wakeNow(): void;
  /** Settles once the loop has stopped. */
  done: Promise<void>;
}

export function runLoop(options: LoopOptions): Loop {
  const retry_ms = options.retry_ms ?? ((failures: number) => backoff_ms(failures, 100, 5_000));
  let pendingWake = false;
  let gatherWanted = false;
  let wakeUp: (() => void) | null = null;

  const gather_ms = options.gather_ms ?? 0;
  assert(gather_ms >= 0, `gather_ms ${gather_ms} must not be negative`);

  /** Wait ms, or less if stopped (or woken, when wakeable). */
  const wait = (ms: number, wakeable: boolean) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(finish, ms);
      timer.unref();
      function finish() {
        clearTimeout(timer);
        options.signal.removeEventListener("abort", finish);
        wakeUp = null;
        resolve();
      }
      options.signal.addEventListener("abort", finish, { once: true });
      if (wakeable) wakeUp = finish;
    });

  const loop = async () => {
    let failures = 0;
    const round = {
      healthy: () => {
        failures = 0;
      },
    };
    while (!options.signal.aborted) {
      if (gatherWanted && gather_ms > 0) await wait(gather_ms, false);
      if (options.signal.aborted) break; // stopped while gathering: no round more
      gatherWanted = false;
      pendingWake = false;
      let result: TickResult;
      try {
        result = await options.tick(round);
        failures = 0;
      } catch (error) {
        failures += 1;
        options.onError(error, failures);
        await wait(retry_ms(failures), false);
        continue;
      }
      if (result === "busy" || options.signal.aborted) {
        gatherWanted = false; // a busy round's successor never waits
        continue;
      }
      // A wake during the round means work arrived after the round looked: look again.
      if (!pendingWake) await wait(options.idle_ms, true);
    }
  };

  return {
    wake() {
      pendingWake = true;
      gatherWanted = true;
      wakeUp?.();
    },
    wakeNow() {
      wakeUp?.();
    },
    done: loop(),
  };
}
