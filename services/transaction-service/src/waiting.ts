/**
 * Waiting reads: `Prefer: wait=N` (RFC 7240) holds a read open until the status is final or N
 * seconds have passed. Every copy of the service learns of final statuses from PostgreSQL
 * (LISTEN final_status, sent by a trigger in the transition's own commit, see migration 003), so
 * a wait held by one copy ends when any copy, or the sweep, finishes the transfer. PostgreSQL
 * rather than Redis pub/sub: the notice is transactional (never sent for a transition that did
 * not commit, never lost by a copy that crashed just after committing), and the saga database is
 * already every copy's dependency while Redis is only a cache.
 *
 * Waits are bounded per caller and in total; a read beyond the bounds is answered at once.
 */
import pg from "pg";
import type { Logger } from "#packages/log/index.ts";
import { backoff_ms, withTimeout } from "#packages/runtime/index.ts";

/** RFC 7240 leaves the cap to the server; the API promises at most 30 s. */
export const WAIT_MAX_S = 30;

export type FinalKind = "transfer" | "disbursement";

/**
 * The wait a `Prefer` header asks for, in seconds, capped at WAIT_MAX_S; null without a valid
 * `wait` preference (an unknown or malformed preference is ignored, as RFC 7240 asks).
 */
export function preferredWait_s(prefer: string | string[] | undefined): number | null {
  const values = prefer === undefined ? [] : Array.isArray(prefer) ? prefer : [prefer];
  for (const value of values) {
    for (const preference of value.split(",")) {
      const match = /^\s*wait\s*=\s*"?(\d{1,6})"?\s*(;.*)?$/i.exec(preference);
      if (match?.[1] !== undefined) return Math.min(Number(match[1]), WAIT_MAX_S);
    }
  }
  return null;
}

export interface WaitLimits {
  /** Most reads waiting at once in this copy. */
  waiting_max: number;
  /** Most reads waiting at once per caller (user or operator) in this copy. */
  waiting_per_caller_max: number;
}

/** One caller's wait: woken (possibly spuriously, then it re-reads) by notices for its id. */
interface Waiter {
  woken: boolean;
  wake: () => void;
}

export class FinalStatusWaiters {
  readonly #limits: WaitLimits;
  readonly #byKey = new Map<string, Set<Waiter>>();
  readonly #perCaller = new Map<string, number>();
  #total = 0;
  #closed = false;

  constructor(limits: WaitLimits) {
    this.#limits = limits;
  }

  get waiting(): number {
    return this.#total;
  }

  /** A notice that `kind:id` became final (or '*' after a lost connection: everyone re-reads). */
  notify(payload: string): void {
    if (payload === "*") {
      for (const waiters of this.#byKey.values()) for (const w of waiters) w.wake();
      return;
    }
    for (const w of this.#byKey.get(payload) ?? []) w.wake();
  }

  /** Shutdown: every wait ends now with the current status, so closing the listener does not hang. */
  close(): void {
    this.#closed = true;
    this.notify("*");
  }

  /**
   * Read until `isFinal` holds or wait_ms has passed, re-reading on each notice. The watch is
   * set before the first read, so a notice between that read and the wait is not missed.
   * Returns the last read and whether the wait was applied (false: over the bounds, answered at once).
   */
  async waitForFinal<T>(options: {
    kind: FinalKind;
    id: string;
    caller: string;
    wait_ms: number;
    read: () => Promise<T>;
    isFinal: (value: T) => boolean;
    signal?: AbortSignal;
  }): Promise<{ value: T; applied: boolean }> {
    const { caller } = options;
    const mine = this.#perCaller.get(caller) ?? 0;
    if (
      this.#closed ||
      this.#total >= this.#limits.waiting_max ||
      mine >= this.#limits.waiting_per_caller_max
    ) {
      return { value: await options.read(), applied: false };
    }
    this.#perCaller.set(caller, mine + 1);
    this.#total += 1;
    const key = `${options.kind}:${options.id}`;
    let resolveWake: () => void = () => {};
    const waiter: Waiter = {
      woken: false,
      wake: () => {
        waiter.woken = true;
        resolveWake();
      },
    };
    const set = this.#byKey.get(key) ?? new Set<Waiter>();
    set.add(waiter);
    this.#byKey.set(key, set);
    const onAbort = () => waiter.wake();
    options.signal?.addEventListener("abort", onAbort);
    try {
      const deadline = Date.now() + options.wait_ms;
      let value = await options.read();
      while (!options.isFinal(value) && !this.#closed && options.signal?.aborted !== true) {
        const left_ms = deadline - Date.now();
        if (left_ms <= 0) break;
        if (!waiter.woken) await this.#sleepUntilWoken(waiter, left_ms, (r) => (resolveWake = r));
        waiter.woken = false;
        value = await options.read();
      }
      return { value, applied: true };
    } finally {
      options.signal?.removeEventListener("abort", onAbort);
      set.delete(waiter);
      if (set.size === 0 && this.#byKey.get(key) === set) this.#byKey.delete(key);
      this.#total -= 1;
      const left = (this.#perCaller.get(caller) ?? 1) - 1;
      if (left === 0) this.#perCaller.delete(caller);
      else this.#perCaller.set(caller, left);
    }
  }

  async #sleepUntilWoken(waiter: Waiter, timeout_ms: number, arm: (resolve: () => void) => void) {
    let timer: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve) => {
      arm(resolve);
      if (waiter.woken) resolve();
      timer = setTimeout(resolve, timeout_ms);
    });
    clearTimeout(timer);
  }
}

export interface FinalStatusListener {
  stop(): Promise<void>;
}

/**
 * A dedicated connection (not the pool's: LISTEN belongs to one session) that passes every
 * `final_status` notice to the waiters. It reconnects with backoff when the connection fails,
 * and wakes every waiter after each (re)connect: notices sent while it was away are lost, so
 * they re-read. A ping every ping_interval_ms finds a connection that died silently.
 */
export function startFinalStatusListener(options: {
  url: string;
  waiters: FinalStatusWaiters;
  logger: Logger;
  ping_interval_ms: number;
  timeout_ms: number;
}): FinalStatusListener {
  const { waiters, logger } = options;
  let stopped = false;
  let client: pg.Client | undefined;
  let ping: NodeJS.Timeout | undefined;
  let attempt = 0;

  const drop = (reason: unknown) => {
    if (client === undefined) return;
    const dead = client;
    client = undefined;
    clearInterval(ping);
    void dead.end().catch(() => {});
    if (stopped) return;
    logger.warn({ err: reason }, "final status listener lost its connection; reconnecting");
    schedule();
  };

  const connect = async () => {
    if (stopped) return;
    const next = new pg.Client({
      connectionString: options.url,
      connectionTimeoutMillis: options.timeout_ms,
      keepAlive: true,
      application_name: "transaction-service final status listener",
    });
    next.on("error", (error) => drop(error));
    next.on("notification", (message) => {
      if (message.channel === "final_status" && message.payload !== undefined)
        waiters.notify(message.payload);
    });
    try {
      await next.connect();
      await withTimeout(next.query("LISTEN final_status"), options.timeout_ms, "LISTEN final_status");
    } catch (error) {
      void next.end().catch(() => {});
      logger.warn({ err: error }, "final status listener cannot connect yet");
      schedule();
      return;
    }
    if (stopped) return void next.end().catch(() => {});
    client = next;
    attempt = 0;
    waiters.notify("*");
    ping = setInterval(() => {
      withTimeout(next.query("SELECT 1"), options.timeout_ms, "final status listener ping").catch(drop);
    }, options.ping_interval_ms);
  };

  const schedule = () => {
    if (stopped) return;
    setTimeout(() => void connect(), backoff_ms(attempt++, 200, 5_000)).unref();
  };

  void connect();
  return {
    async stop() {
      stopped = true;
      clearInterval(ping);
      const last = client;
      client = undefined;
      await last?.end().catch(() => {});
    },
  };
}
