/**
 * The benchmark's load generator: real clients of the public API. Every transfer is a POST with
 * an Idempotency-Key and a user's bearer token, then GETs until the API shows it COMPLETED (or
 * FAILED): a transfer counts only once a client could see it done.
 *
 * Two shapes of load:
 * - closed loop: `concurrency` clients, each sends its next transfer when the last one is seen
 *   final (how throughput against concurrency is measured, like pgbench's clients);
 * - open loop: transfers arrive at a fixed rate whatever the answers (how latency at a given
 *   rate is measured); latency is taken from the intended send time, so a stall is not hidden
 *   by the sends it delayed (coordinated omission).
 */
import { randomUUID } from "node:crypto";
import { createHistogram, type RecordableHistogram } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { type Dispatcher, Pool } from "undici";
import { assert } from "#packages/runtime/assert.ts";
import { countError, type ErrorKinds, errorKind, statusKind } from "./errors.ts";

/** Summary of a latency histogram, in milliseconds. */
export interface Latency {
  count: number;
  p50_ms: number;
  p95_ms: number;
  p99_ms: number;
  max_ms: number;
}

export function latencyOf(histogram: RecordableHistogram): Latency {
  const ms = (us: number): number => Math.round(us / 10) / 100;
  if (histogram.count === 0) return { count: 0, p50_ms: 0, p95_ms: 0, p99_ms: 0, max_ms: 0 };
  return {
    count: histogram.count,
    p50_ms: ms(histogram.percentile(50)),
    p95_ms: ms(histogram.percentile(95)),
    p99_ms: ms(histogram.percentile(99)),
    max_ms: ms(histogram.max),
  };
}

const newHistogram = (): RecordableHistogram =>
  createHistogram({ lowest: 1, highest: 600_000_000, figures: 3 });
const recordSince = (histogram: RecordableHistogram, started_ms: number): void =>
  histogram.record(Math.max(1, Math.round((performance.now() - started_ms) * 1000)));

/** An error whose code is the kind it is counted as (errors.ts). */
const failure = (message: string, code: string): Error => Object.assign(new Error(message), { code });

interface Answer {
  status: number;
  // biome-ignore lint/suspicious/noExplicitAny: free-form JSON from the API
  body: any;
}

/**
 * A keep-alive HTTP/1.1 client for one base URL, with a timeout on every call: undici's Pool,
 * which costs the load generator about a third less CPU per call than node:http's request and
 * agent (and allocates less, so its own collector pauses less often), so that less of the
 * machine goes to the client and less of a measured latency is the client's.
 */
export class ApiClient {
  readonly #pool: Pool;

  constructor(base_url: string, sockets_max: number, timeout_ms: number) {
    this.#pool = new Pool(new URL(base_url).origin, {
      connections: sockets_max,
      headersTimeout: timeout_ms,
      bodyTimeout: timeout_ms,
    });
  }

  async call(
    method: "GET" | "POST",
    path: string,
    headers: Record<string, string>,
    body?: unknown,
  ): Promise<Answer> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const all = payload === undefined ? headers : { ...headers, "content-type": "application/json" };
    let answer: Dispatcher.ResponseData;
    try {
      answer = await this.#pool.request({ method, path, headers: all, body: payload ?? null });
    } catch (error) {
      throw asTimeout(error, `${method} ${path}: no answer in time`);
    }
    const text = await answer.body.text().catch((error: unknown) => {
      throw asTimeout(error, `${method} ${path}: answer cut off`);
    });
    try {
      return { status: answer.statusCode, body: text === "" ? null : JSON.parse(text) };
    } catch {
      // A proxy's own error page (HAProxy's 503, say) is HTML: counted by its status.
      throw failure(
        `${method} ${path}: ${answer.statusCode} with a body that is not JSON`,
        `${statusKind(answer.statusCode)} not JSON`,
      );
    }
  }

  close(): void {
    void this.#pool.destroy();
  }
}

/** undici's codes for a call that ran out of time: counted as TIMEOUT, as before. */
const TIMEOUT_CODES: ReadonlySet<string> = new Set(["UND_ERR_HEADERS_TIMEOUT", "UND_ERR_BODY_TIMEOUT"]);

/** `error` as a TIMEOUT failure saying `message` when undici ran out of time, else unchanged. */
const asTimeout = (error: unknown, message: string): unknown =>
  TIMEOUT_CODES.has(errorKind(error)) ? failure(message, "TIMEOUT") : error;

/** Who pays whom: uniform over the wallets, or with one hot wallet in a share of the transfers. */
export interface Mix {
  wallets: readonly number[];
  /** Share of transfers (0..1) that involve wallets[0], half as payer and half as payee. */
  hot_share: number;
}

export function pickPair(mix: Mix, random: () => number = Math.random): [number, number] {
  const n = mix.wallets.length;
  assert(n >= 2, "a mix needs two wallets");
  const other = (not: number): number => {
    for (;;) {
      const i = Math.floor(random() * n);
      if (i !== not) return i;
    }
  };
  const r = random();
  let source: number;
  let dest: number;
  if (r < mix.hot_share / 2) {
    source = 0;
    dest = other(0);
  } else if (r < mix.hot_share) {
    dest = 0;
    source = other(0);
  } else {
    source = Math.floor(random() * n);
    dest = other(source);
  }
  return [mix.wallets[source] as number, mix.wallets[dest] as number];
}

export interface LoadTarget {
  api: ApiClient;
  /** Bearer token of a wallet's owner (minted once per wallet, then cached). */
  tokenFor(user_id: number): Promise<string>;
  amount_max_minor: number;
  /** Give up on seeing a transfer final after this long (counted as not completed). */
  final_timeout_ms: number;
  /**
   * Read with `Prefer: wait=N` (the service holds the GET until the status is final) instead of
   * polling; unset, the client polls as a client without waiting reads would.
   */
  wait_s?: number;
}

export interface LoadResult {
  duration_s: number;
  sent: number;
  completed: number;
  failed: number;
  /** Accepted but not seen final within final_timeout_ms, or an error answer. */
  unfinished: number;
  errors: number;
  /** The errors by kind (errors.ts); absent in results written before they were counted. */
  error_kinds?: ErrorKinds;
  throughput_tps: number;
  post: Latency;
  completion: Latency;
  poll_get: Latency;
  gets_per_transfer: number;
  /** Some completed transfers and their payer, for the cached-read phase. */
  completed_transfers: { id: string; reader: number }[];
}

class Recorder {
  readonly post = newHistogram();
  readonly completion = newHistogram();
  readonly poll_get = newHistogram();
  sent = 0;
  completed = 0;
  failed = 0;
  unfinished = 0;
  errors = 0;
  readonly error_kinds: ErrorKinds = {};
  gets = 0;
  readonly completed_transfers: { id: string; reader: number }[] = [];
  /** Smoothed time to completion: the first poll waits most of it, so polls stay few. */
  completion_ewma_ms = 20;

  error(kind: string): void {
    this.errors += 1;
    countError(this.error_kinds, kind);
  }

  result(duration_s: number): LoadResult {
    return {
      duration_s,
      sent: this.sent,
      completed: this.completed,
      failed: this.failed,
      unfinished: this.unfinished,
      errors: this.errors,
      error_kinds: this.error_kinds,
      throughput_tps: Math.round((this.completed / duration_s) * 10) / 10,
      post: latencyOf(this.post),
      completion: latencyOf(this.completion),
      poll_get: latencyOf(this.poll_get),
      gets_per_transfer: this.sent === 0 ? 0 : Math.round((this.gets / this.sent) * 100) / 100,
      completed_transfers: this.completed_transfers,
    };
  }
}

/**
 * One transfer, start to seen-final. `started_ms` is when it was meant to start (open loop) or
 * did start (closed loop). Records into `recorder` only when `measured` (warm-up is not).
 */
async function oneTransfer(
  target: LoadTarget,
  mix: Mix,
  started_ms: number,
  recorder: Recorder | null,
): Promise<void> {
  const [source, dest] = pickPair(mix);
  const amount = 1 + Math.floor(Math.random() * target.amount_max_minor);
  const token = await target.tokenFor(source);
  const auth = { authorization: `Bearer ${token}` };
  if (recorder !== null) recorder.sent += 1;
  let answer: Answer;
  try {
    answer = await target.api.call(
      "POST",
      "/transactions/transfer",
      { ...auth, "idempotency-key": randomUUID() },
      { source_user_id: source, dest_user_id: dest, amount },
    );
  } catch (error) {
    recorder?.error(errorKind(error));
    return;
  }
  if (recorder !== null) recordSince(recorder.post, started_ms);
  if (answer.status !== 201) {
    // 422 insufficient funds is a final answer too; anything else is an error of the run.
    if (recorder !== null) {
      if (answer.status === 422) recorder.failed += 1;
      else recorder.error(statusKind(answer.status));
    }
    return;
  }
  const id: string = answer.body.data.transaction.id;
  let status: string = answer.body.data.transaction.status;
  const read_headers = target.wait_s === undefined ? auth : { ...auth, prefer: `wait=${target.wait_s}` };
  const first_wait_ms = recorder === null ? 20 : recorder.completion_ewma_ms * 0.8;
  let wait_ms = Math.max(2, first_wait_ms - (performance.now() - started_ms));
  while (status === "PENDING") {
    if (performance.now() - started_ms > target.final_timeout_ms) {
      if (recorder !== null) recorder.unfinished += 1;
      return;
    }
    // A waiting read returns when the status is final: nothing to sleep on.
    if (target.wait_s === undefined) {
      await sleep(wait_ms);
      wait_ms = Math.min(50, Math.max(5, wait_ms / 2));
    }
    const polled = performance.now();
    try {
      const got = await target.api.call("GET", `/transactions/${id}`, read_headers);
      if (recorder !== null) {
        recorder.gets += 1;
        recordSince(recorder.poll_get, polled);
      }
      if (got.status === 200) status = got.body.data.transaction.status;
    } catch (error) {
      recorder?.error(errorKind(error));
    }
  }
  if (recorder === null) return;
  recordSince(recorder.completion, started_ms);
  const took_ms = performance.now() - started_ms;
  recorder.completion_ewma_ms = recorder.completion_ewma_ms * 0.95 + took_ms * 0.05;
  if (status === "COMPLETED") {
    recorder.completed += 1;
    if (recorder.completed_transfers.length < 20_000)
      recorder.completed_transfers.push({ id, reader: source });
  } else recorder.failed += 1;
}

/** `concurrency` clients in a closed loop: warm up, then measure for `duration_s`. */
export async function closedLoop(
  target: LoadTarget,
  mix: Mix,
  options: { concurrency: number; warmup_s: number; duration_s: number },
): Promise<LoadResult> {
  assert(options.concurrency >= 1, "a closed loop needs a concurrency of at least 1");
  assert(options.duration_s > 0, "a closed loop needs a positive duration");
  const t0 = performance.now();
  const measure_from = t0 + options.warmup_s * 1000;
  const measure_to = measure_from + options.duration_s * 1000;
  const recorder = new Recorder();
  const client = async (): Promise<void> => {
    while (performance.now() < measure_to) {
      const started = performance.now();
      // Only transfers that start inside the window count (and finish inside it: see below).
      const measured = started >= measure_from;
      await oneTransfer(target, mix, started, measured ? recorder : null);
    }
  };
  await Promise.all(Array.from({ length: options.concurrency }, client));
  // Transfers started near the end finish after it; throughput is over the time they took.
  const elapsed_s = (performance.now() - measure_from) / 1000;
  return recorder.result(elapsed_s);
}

/**
 * Exactly `transfers` transfers by `concurrency` clients in a closed loop, every one measured: the
 * CPU they cost can be compared between runs on a busy machine, where a timed window cannot.
 */
export async function countedLoop(
  target: LoadTarget,
  mix: Mix,
  options: { concurrency: number; transfers: number },
): Promise<LoadResult> {
  assert(options.concurrency >= 1, "a counted loop has at least one client");
  assert(options.transfers >= 1, "a counted loop makes at least one transfer");
  const recorder = new Recorder();
  let left = options.transfers;
  const t0 = performance.now();
  const client = async (): Promise<void> => {
    while (left > 0) {
      left -= 1;
      await oneTransfer(target, mix, performance.now(), recorder);
    }
  };
  await Promise.all(Array.from({ length: options.concurrency }, client));
  return recorder.result((performance.now() - t0) / 1000);
}

/** Transfers arriving at `rate_tps` (at most `in_flight_max` open at once) for `duration_s`. */
export async function openLoop(
  target: LoadTarget,
  mix: Mix,
  options: { rate_tps: number; duration_s: number; in_flight_max: number },
): Promise<LoadResult & { dropped: number }> {
  assert(options.rate_tps > 0, "an open loop needs a positive rate");
  assert(options.duration_s > 0, "an open loop needs a positive duration");
  const recorder = new Recorder();
  const interval_ms = 1000 / options.rate_tps;
  const total = Math.round(options.rate_tps * options.duration_s);
  const t0 = performance.now();
  const open = new Set<Promise<void>>();
  let dropped = 0;
  for (let i = 0; i < total; i++) {
    const due = t0 + i * interval_ms;
    const ahead_ms = due - performance.now();
    if (ahead_ms > 1) await sleep(ahead_ms);
    if (open.size >= options.in_flight_max) {
      dropped += 1; // the system fell behind the rate: counted, not queued without bound
      continue;
    }
    const flight = oneTransfer(target, mix, due, recorder).finally(() => open.delete(flight));
    open.add(flight);
  }
  await Promise.all(open);
  const elapsed_s = (performance.now() - t0) / 1000;
  return { ...recorder.result(elapsed_s), dropped };
}

/**
 * GET of transfers that are final (so cached), by `concurrency` readers for `duration_s`, after
 * `warmup_s` of the same reads unmeasured (as every case warms up: the case before leaves work in
 * flight for a moment, and the readers' own paths are cold).
 */
export async function cachedReads(
  target: LoadTarget,
  transfers: readonly { id: string; reader: number }[],
  options: { concurrency: number; duration_s: number; warmup_s: number },
): Promise<{ reads: number; errors: number; error_kinds: ErrorKinds; get: Latency }> {
  assert(transfers.length > 0, "no transfers to read");
  const histogram = newHistogram();
  let reads = 0;
  let errors = 0;
  const error_kinds: ErrorKinds = {};
  const error = (kind: string): void => {
    errors += 1;
    countError(error_kinds, kind);
  };
  const measure_from = performance.now() + options.warmup_s * 1000;
  const until = measure_from + options.duration_s * 1000;
  const reader = async (offset: number): Promise<void> => {
    for (let i = offset; performance.now() < until; i += options.concurrency) {
      const t = transfers[i % transfers.length] as { id: string; reader: number };
      const token = await target.tokenFor(t.reader);
      const started = performance.now();
      const measured = started >= measure_from;
      try {
        const got = await target.api.call("GET", `/transactions/${t.id}`, {
          authorization: `Bearer ${token}`,
        });
        if (!measured) continue;
        recordSince(histogram, started);
        if (got.status === 200) reads += 1;
        else error(statusKind(got.status));
      } catch (failed) {
        if (measured) error(errorKind(failed));
      }
    }
  };
  await Promise.all(Array.from({ length: options.concurrency }, (_, i) => reader(i)));
  return { reads, errors, error_kinds, get: latencyOf(histogram) };
}
