/** Process lifecycle shared by the services: start-up retries and graceful shutdown. */
import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "#packages/log/index.ts";

/**
 * Engines may still be starting (or restarting) when a service boots: retry a start-up step
 * with capped backoff instead of crashing into a restart loop. Gives up after wait_max_ms so a
 * misconfiguration still ends in a clear crash. `attempt_timeout_ms`, where given, bounds each
 * attempt: a driver call that never answers then fails the attempt instead of holding the
 * service off the network for good (`fn` gets the attempt number, to reset its client before a
 * retry). Not for steps that must not run twice at once, such as migrations: an attempt that
 * timed out still runs.
 */
export async function retryStartup<T>(
  what: string,
  logger: Logger,
  fn: (attempt: number) => Promise<T>,
  wait_max_ms = 120_000,
  attempt_timeout_ms: number | null = null,
): Promise<T> {
  const started = Date.now();
  for (let attempt = 0; ; attempt++) {
    try {
      const running = fn(attempt);
      return await (attempt_timeout_ms === null
        ? running
        : withTimeout(running, attempt_timeout_ms, `${what}: attempt ${attempt}`));
    } catch (error) {
      if (Date.now() - started > wait_max_ms) throw error;
      const delay = backoff_ms(attempt, 200, 5_000, { kind: "none" });
      logger.warn({ err: error, attempt, delay_ms: delay }, `${what} not ready; retrying`);
      await sleep(delay);
    }
  }
}

/** Run the closers in order on SIGTERM/SIGINT, then exit; a second signal or a stuck closer forces exit. */
export function onShutdown(
  logger: Logger,
  closers: Array<() => Promise<unknown>>,
  timeout_ms = 10_000,
): void {
  let closing = false;
  const shutdown = async (signal: string) => {
    if (closing) process.exit(1);
    closing = true;
    logger.info({ signal }, "shutting down");
    setTimeout(() => {
      logger.error("shutdown timed out; exiting");
      process.exit(1);
    }, timeout_ms).unref();
    for (const close of closers) {
      try {
        await close();
      } catch (error) {
        logger.warn({ err: error }, "error while closing");
      }
    }
    process.exit(0);
  };
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  process.on("SIGINT", () => void shutdown("SIGINT"));
}

/** Reject if the promise has not settled within timeout_ms: every wait on an engine or peer is bounded. */
export async function withTimeout<T>(promise: Promise<T>, timeout_ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${timeout_ms} ms`)), timeout_ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** How a backoff's delay is spread below its ceiling. */
export interface Jitter {
  /**
   * "half": half fixed, half random (a retry of one's own, soon but not in step with others);
   * "full": uniform in [0, ceiling) (many retries failing together, an endpoint down, spread out);
   * "none": the ceiling itself (a start-up or reconnect wait, where spreading buys nothing).
   */
  kind: "half" | "full" | "none";
  /** Uniform in [0, 1); tests pin it. */
  random?: (() => number) | undefined;
}

const HALF_JITTER: Jitter = { kind: "half" };

/**
 * Capped exponential backoff with jitter: the ceiling is base_ms * 2^attempt, at most cap_ms. The
 * one home of backoff arithmetic; every retry in the tree waits this.
 */
export function backoff_ms(
  attempt: number,
  base_ms = 100,
  cap_ms = 5_000,
  jitter: Jitter = HALF_JITTER,
): number {
  const exp = Math.min(cap_ms, base_ms * 2 ** Math.min(Math.max(attempt, 0), 30));
  const random = jitter.random ?? Math.random;
  if (jitter.kind === "none") return exp;
  if (jitter.kind === "full") return Math.floor(random() * exp);
  return Math.round(exp / 2 + random() * (exp / 2));
}
