/**
 * The dispatcher on an event loop of its own: a worker thread of the service's process
 * (thread-entry.ts) with its own small PostgreSQL pool, logger and tracing. The service's main
 * loop runs the saga (event batches, outbox relay, sweeps); a delivery's exchange no longer waits
 * behind that work for each of its steps, so deliveries keep pace when a batch completes
 * thousands of transfers at once.
 *
 * The main thread keeps what others reach it by: wake() (a message to the worker), the delivery
 * results (posted by the worker, counted by the main thread's metrics), and the crash point
 * after a send (a shared flag the worker reads synchronously; a SIGKILL from any thread kills the
 * whole process). A worker that dies is logged and started again after a backoff: the saga goes on
 * meanwhile, and the deliveries the dead worker had leased are claimed again when their leases end.
 *
 * Several workers may share the queue (their claims skip each other's rows, as several copies'
 * do), the process's limits split between them. On a busy host a thread's deliveries go at its
 * share of the CPU: at a batch peak on two cores one thread fell behind a payer's 1,000 events a
 * batch, two kept up (README, Profile-guided rounds 21).
 */
import { Worker } from "node:worker_threads";
import type { Logger } from "#packages/log/index.ts";
import { assert } from "#packages/runtime/assert.ts";
import { backoff_ms } from "#packages/runtime/index.ts";
import type { DeliveryResult, Dispatcher, DispatcherSettings } from "./dispatcher.ts";

export interface DispatcherThreadOptions {
  settings: DispatcherSettings;
  /** The worker's own pool: the service's database, a few connections. */
  database_url: string;
  pool_max: number;
  /** The worker's log lines and spans are the service's. */
  service: string;
  log_level: string;
  /** The main thread's logger: the worker's starts, deaths and restarts. */
  logger: Logger;
  on_result?: (result: DeliveryResult) => void;
  /**
   * Worker threads sharing the queue (1 by default; never more than the limits below allow). The
   * settings' limits are the process's: each thread gets its share of concurrency_max and
   * endpoint_in_flight_max, and a pool of pool_max connections of its own.
   */
  threads?: number;
}

export interface DispatcherThread extends Dispatcher {
  /** Fault tests: the next send, in the worker, kills the process before its outcome is recorded. */
  crashAfterSend(): void;
}

/** What the worker is handed at its start. */
export interface ThreadData {
  settings: DispatcherSettings;
  database_url: string;
  pool_max: number;
  service: string;
  log_level: string;
  /** One Int32: 1 once the crash point after a send is armed. */
  crash_after_send: SharedArrayBuffer;
  /**
   * One Int32 per worker: 1 while a wake posted to it is not yet taken (the worker takes it as the
   * claim it starts begins, after the gather). A wake then is redundant (that claim sees every row
   * committed before), and is not posted:
   * at the peak most transitions enqueue a delivery, and a postMessage each was 1.7% of
   * transaction-service's busy time.
   */
  wake_pending: SharedArrayBuffer;
}

/** What one worker is started with: the shared data, and its place in `wake_pending`. */
export type WorkerData = ThreadData & { index: number };

/** Main thread to worker. */
export type ToWorker = { type: "wake" } | { type: "stop" };
/** Worker to main thread. */
export type FromWorker = { type: "result"; result: DeliveryResult };

const restart_base_ms = 1_000;
const restart_cap_ms = 30_000;
/** A worker that ran this long counts as healthy: its next death restarts after the base delay again. */
const healthy_run_ms = 60_000;
/** How long stop() waits past the attempts' own timeout for the worker to record them and exit. */
const stop_grace_ms = 5_000;

const entry = new URL("./thread-entry.ts", import.meta.url);
/** Most dispatcher threads in one process. */
export const THREADS_MAX = 16;

/**
 * How many threads start, and each one's settings: its share of the process's concurrency_max and
 * endpoint_in_flight_max. Never more threads than those limits allow requests at once, so the
 * shares add up to no more than the limits (an endpoint limited to 1 stays at 1).
 */
export function threadShares(
  settings: DispatcherSettings,
  requested: number,
): { threads: number; settings: DispatcherSettings } {
  assert(
    Number.isSafeInteger(requested) && requested >= 1 && requested <= THREADS_MAX,
    `threads: ${requested}`,
  );
  const threads = Math.min(requested, settings.concurrency_max, settings.endpoint_in_flight_max);
  return {
    threads,
    settings: {
      ...settings,
      concurrency_max: Math.floor(settings.concurrency_max / threads),
      endpoint_in_flight_max: Math.floor(settings.endpoint_in_flight_max / threads),
    },
  };
}

export function startDispatcherThread(options: DispatcherThreadOptions): DispatcherThread {
  const { threads, settings } = threadShares(options.settings, options.threads ?? 1);
  // One flag for every worker: whichever sends next reaches the crash point.
  const crash_after_send = new SharedArrayBuffer(4);
  const wake_pending = new SharedArrayBuffer(4 * threads);
  const pending = new Int32Array(wake_pending);
  const data: ThreadData = {
    settings,
    database_url: options.database_url,
    pool_max: options.pool_max,
    service: options.service,
    log_level: options.log_level,
    crash_after_send,
    wake_pending,
  };
  const workers = Array.from({ length: threads }, (_, index) => superviseWorker(data, index, options));
  // As many workers as deliveries, in turn: waking all of them for one delivery made each claim
  // while one could get it (the others' claims came back empty); a burst wakes them all, so
  // that its deliveries spread over the threads' CPU.
  let next = 0;
  return {
    wake: (deliveries = 1) => {
      const count = Math.min(workers.length, Math.max(1, deliveries));
      for (let i = 0; i < count; i++) {
        if (Atomics.exchange(pending, next, 1) === 0) workers[next]?.send({ type: "wake" });
        next = (next + 1) % workers.length;
      }
    },
    crashAfterSend: () => Atomics.store(new Int32Array(crash_after_send), 0, 1),
    async stop() {
      await Promise.all(workers.map((w) => w.stop()));
    },
  };
}

/**
 * One worker thread, started again after a backoff whenever it dies (its leased deliveries are
 * claimed again when their leases end), until stop().
 */
function superviseWorker(data: ThreadData, index: number, options: DispatcherThreadOptions) {
  let worker: Worker | null = null;
  let stopping = false;
  let failures = 0;
  let restartTimer: NodeJS.Timeout | undefined;
  let exited: Promise<void> = Promise.resolve();

  const start = () => {
    const started_ms = Date.now();
    // A worker that died with a wake not taken starts with none pending, or it would get no more.
    Atomics.store(new Int32Array(data.wake_pending), index, 0);
    const w = new Worker(entry, {
      workerData: { ...data, index } satisfies WorkerData,
      name: `webhook-dispatcher-${index}`,
      execArgv: workerExecArgv(index),
    });
    worker = w;
    w.on("message", (message: FromWorker) => {
      if (message.type === "result") options.on_result?.(message.result);
    });
    w.on("error", (error) =>
      options.logger.error({ err: error, thread: index }, "webhook dispatcher thread failed"),
    );
    exited = new Promise((resolve) =>
      w.once("exit", (code) => {
        worker = null;
        resolve();
        if (stopping) return;
        if (Date.now() - started_ms >= healthy_run_ms) failures = 0;
        failures += 1;
        const delay_ms = backoff_ms(failures - 1, restart_base_ms, restart_cap_ms);
        options.logger.error(
          { code, failures, restart_in_ms: delay_ms, thread: index },
          "webhook dispatcher thread exited; starting it again",
        );
        restartTimer = setTimeout(start, delay_ms);
      }),
    );
  };
  start();

  const send = (message: ToWorker) => worker?.postMessage(message);
  return {
    send,
    async stop() {
      stopping = true;
      clearTimeout(restartTimer);
      const w = worker;
      if (w === null) return;
      send({ type: "stop" });
      const timer = setTimeout(() => {
        options.logger.warn(
          { thread: index },
          "webhook dispatcher thread did not stop in time; terminating it",
        );
        void w.terminate();
      }, data.settings.attempt_timeout_ms + stop_grace_ms);
      await exited;
      clearTimeout(timer);
    },
  };
}

/**
 * A profiled process's Node options for the worker (the benchmark's --profile), with a CPU profile
 * name of its own: under one --cpu-prof-name the thread that stops last would overwrite the
 * other's profile. Otherwise none are given, and the worker inherits the process's.
 */
function workerExecArgv(index: number): string[] | undefined {
  const named = /^--cpu-prof-name=(.+)\.cpuprofile$/;
  if (!process.execArgv.some((arg) => named.test(arg))) return undefined;
  const suffix = index === 0 ? "webhooks" : `webhooks-${index}`;
  return process.execArgv.map((arg) => arg.replace(named, `--cpu-prof-name=$1-${suffix}.cpuprofile`));
}
