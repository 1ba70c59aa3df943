/**
 * The webhook dispatcher: claims due deliveries from PostgreSQL and sends them, at least once.
 *
 * - Claim: a short transaction takes due rows with FOR UPDATE SKIP LOCKED (so several copies share
 *   the work) and leases each one: next_attempt_at moves to now() + lease_ms on the database clock
 *   and a fresh claim_token marks the attempt. A copy that dies mid-attempt (kill -9) records
 *   nothing; once the lease ends, any copy claims the row again and re-sends it with the same
 *   webhook-id. No connection is held while a request is in flight.
 * - Fairness: at most concurrency_max requests at once, and at most endpoint_in_flight_max per
 *   endpoint; an endpoint at its limit is left out of the claim, so a slow or dead endpoint never
 *   holds the slots (or the head of the queue) that other endpoints' deliveries need.
 * - Lease ahead: a claim takes up to three rows per slot (per endpoint and in all), and a slot
 *   that frees takes the next leased row at once, so a busy endpoint costs a claim every few
 *   answers rather than one per answer. A leased row is sent well inside its lease, or given up
 *   to a later claim; on stop the rows never sent are released at once.
 * - Each attempt: SSRF check and DNS pinning (address-guard.ts), Standard Webhooks signature with
 *   every valid key, attempt_timeout_ms for the whole exchange, no redirects followed (a redirect
 *   could lead anywhere), a bounded read of the answer.
 * - Trace: each attempt is a client span `webhook deliver` in the trace the delivery row keeps
 *   (the request that caused its event), and the request carries its `traceparent` header; with
 *   tracing off the header carries the row's trace context itself, and the attempt's log lines
 *   name the trace and the transfer either way.
 * - Record: one log row per attempt; delivered on a 2xx; otherwise the next attempt after a
 *   full-jitter exponential delay, until the retry window (3 days by default) is spent: then the
 *   delivery fails and its endpoint is marked failing (its other pending deliveries fail too, and
 *   stay redeliverable one by one).
 */
import http from "node:http";
import https from "node:https";
import type { Logger } from "#packages/log/index.ts";
import { type Pool, type PoolClient, withTransaction } from "#packages/pg/index.ts";
import { assert } from "#packages/runtime/assert.ts";
import { backoff_ms, withTimeout } from "#packages/runtime/index.ts";
import { runLoop } from "#packages/runtime/loops.ts";
import { contextFromRow, injectHttpHeaders } from "#packages/tracing/carriers.ts";
import { type Context, type Span, SpanStatusCode, traceFields, withSpan } from "#packages/tracing/index.ts";
import { type AddressGuardOptions, checkUrl, pinnedLookup } from "./address-guard.ts";
import { DeliveryConnections } from "./connections.ts";
import { type SignedHeaders, signHeaders } from "./secrets.ts";
import { pruneDeliveries } from "./store.ts";

export interface RetryPolicy {
  /** Delay ceiling of the first retry; it doubles with each attempt. */
  base_ms: number;
  /** Largest delay ceiling between two attempts. */
  cap_ms: number;
  /** How long a delivery is retried, from its first attempt (or its redelivery). */
  window_ms: number;
  /** Uniform in [0, 1); tests pin it. */
  random?: () => number;
}

export const defaultRetryPolicy: RetryPolicy = {
  base_ms: 5_000,
  cap_ms: 6 * 3_600_000,
  window_ms: 3 * 86_400_000,
};

/**
 * Full jitter: uniform in [0, min(cap, base * 2^(attempt-1))], so that many deliveries failing
 * together (an endpoint down) do not come back together.
 */
export function retryDelay_ms(attempt: number, policy: RetryPolicy): number {
  return backoff_ms(attempt - 1, policy.base_ms, policy.cap_ms, { kind: "full", random: policy.random });
}

export interface DispatcherOptions {
  pool: Pool;
  logger: Logger;
  guard: AddressGuardOptions;
  /** Whole exchange of one attempt: connect, send, answer. */
  attempt_timeout_ms: number;
  /** Requests in flight in this process. */
  concurrency_max: number;
  /** Requests in flight to one endpoint in this process. */
  endpoint_in_flight_max: number;
  /** Most rows claimed by one query. */
  batch_max: number;
  /** Poll interval when nothing is due (wake() shortens it). */
  idle_poll_ms: number;
  /**
   * How long deliveries enqueued by a wake() may gather before the claim it starts (default 0):
   * fewer, fuller claims. A claim that freed slots ask for never waits.
   */
  gather_ms?: number;
  /** How long a claimed row is left to its claimant before another copy may claim it; must exceed attempt_timeout_ms. */
  lease_ms: number;
  retry: RetryPolicy;
  /** Finished deliveries older than this are pruned, a batch at a time when idle (unset: kept). */
  retention_ms?: number;
  /** Told each attempt's recorded result (metrics): gave_up when it was the delivery's last. */
  on_result?: (result: DeliveryResult) => void;
  /** Runs after a send its receiver answered with a 2xx, before that is recorded: a crash point for fault tests. */
  after_send?: (delivery_id: string) => void;
  /** Runs right before each claim (a worker thread's main thread posts wakes again after it). */
  before_claim?: () => void;
  user_agent?: string;
}

export type DeliveryResult = "delivered" | "failed" | "gave_up";

/** The options that are plain values, without the engines and hooks: they can cross to a worker thread. */
export type DispatcherSettings = Omit<
  DispatcherOptions,
  "pool" | "logger" | "on_result" | "after_send" | "before_claim"
>;

export interface Dispatcher {
  /**
   * `deliveries` were enqueued (1 when unknown): look for due rows now. A dispatcher on several
   * threads wakes as many of them as there are deliveries, in turn.
   */
  wake(deliveries?: number): void;
  /** Stops claiming and waits for the requests in flight to be recorded. */
  stop(): Promise<void>;
}

interface Claimed {
  id: string;
  endpoint_id: string;
  webhook_id: string;
  /** The request body, the payload as PostgreSQL writes it: sent and signed as it is, never re-serialised. */
  body: string;
  /** What the event is about, for the delivery's log lines. */
  transfer_id: string | null;
  disbursement_id: string | null;
  attempts: number;
  claim_token: string;
  url: string;
  secrets: string[];
  /** The trace the delivery continues (carriers.ts), or null. */
  traceparent: string | null;
}

interface Outcome {
  ok: boolean;
  response_code: number | null;
  latency_ms: number;
  error: string | null;
}

const response_bytes_max = 64 * 1024;
/** Endpoint addresses whose connections are kept alive at once (least recently used closed first). */
const connection_agents_max = 1_000;
/** An idle kept-alive connection to an endpoint is closed after this long. */
const connection_idle_ms = 30_000;

/** The dispatcher's options as an attempt sees them: with the kept-alive connections. */
type AttemptOptions = DispatcherOptions & { connections: DeliveryConnections };
const prune_interval_ms = 60_000;
const prune_batch_max = 1_000;
const error_chars_max = 500;

export function startDispatcher(options: DispatcherOptions): Dispatcher {
  assert(options.lease_ms > options.attempt_timeout_ms, "webhook lease_ms must exceed attempt_timeout_ms");
  const inFlight = new Map<string, number>();
  let total = 0;
  const stopping = new AbortController();
  const running = new Set<Promise<void>>();
  const recordDelivered = deliveredRecorder(options);
  const attempt_options = attemptOptionsOf(options);
  const waiting = new WaitingRows(options, (row) => total < options.concurrency_max && hasSlot(row));
  const hasSlot = (row: Claimed) => (inFlight.get(row.endpoint_id) ?? 0) < options.endpoint_in_flight_max;

  /** A slot came free: the rows leased ahead take it; a claim (at once) only once the endpoint's run low. */
  const freed = (endpoint_id: string) => {
    if (stopping.signal.aborted) return;
    for (const row of waiting.startable()) run(row);
    if (waiting.ranLow(endpoint_id)) loop.wakeNow();
  };

  const run = (row: Claimed) => {
    total += 1;
    const slot = holdSlot(inFlight, row.endpoint_id, () => freed(row.endpoint_id));
    const traced = tracedDelivery(options.logger, row);
    const task = attemptAndRecord(attempt_options, row, traced, recordDelivered, slot.release)
      .catch((error: unknown) =>
        traced.logger.warn({ err: error }, "webhook attempt not recorded; the lease will expire"),
      )
      .finally(() => {
        total -= 1;
        running.delete(task);
        // Room again: the endpoint's slot, or the process's.
        if (slot.held()) slot.release();
        else freed(row.endpoint_id);
      });
    running.add(task);
  };

  const startOrWait = (row: Claimed) =>
    total < options.concurrency_max && hasSlot(row) ? run(row) : waiting.add(row);
  const pruneWhenDue = pruner(options);

  // One round claims what is due (room permitting) and starts it. A full claim may have left more
  // due rows, and an endpoint whose leased rows ran low wants more: claim again at once. Otherwise
  // wait for a wake (an enqueue, whose company gathers first) or the poll interval.
  const loop = runLoop({
    signal: stopping.signal,
    idle_ms: options.idle_poll_ms,
    gather_ms: options.gather_ms ?? 0,
    tick: async () => {
      options.before_claim?.();
      const room = Math.min(options.batch_max, waiting.lease_max - total - waiting.size);
      const held = waiting.claiming(inFlight);
      const rows = room > 0 ? await claim(options, room, held, waiting.endpoint_lease_max) : [];
      waiting.claimed(held, rows, room);
      for (const row of rows) startOrWait(row);
      if ((rows.length > 0 && rows.length === room) || waiting.wantsClaim()) return "busy";
      await pruneWhenDue();
      return "idle";
    },
    onError: (error, failures) =>
      options.logger.warn({ err: error, failures }, "webhook claim failed; retrying"),
  });
  const done = (async () => {
    await loop.done;
    while (running.size > 0) await Promise.allSettled([...running]);
    await waiting.release();
  })();

  return {
    wake() {
      waiting.enqueued();
      loop.wake();
    },
    async stop() {
      stopping.abort();
      await done;
      attempt_options.connections.close();
    },
  };
}

/** The options as attempts see them: with the kept-alive connections, at most one per slot. */
function attemptOptionsOf(options: DispatcherOptions): AttemptOptions {
  const connections = new DeliveryConnections({
    sockets_max: options.endpoint_in_flight_max,
    agents_max: connection_agents_max,
    idle_ms: connection_idle_ms,
  });
  return { ...options, connections };
}

/** Prunes finished deliveries past retention, at most once per prune_interval_ms. */
function pruner(options: DispatcherOptions): () => Promise<void> {
  let pruned_at_ms = 0;
  return async () => {
    if (options.retention_ms === undefined || Date.now() - pruned_at_ms < prune_interval_ms) return;
    pruned_at_ms = Date.now();
    await pruneDeliveries(options.pool, options.retention_ms, prune_batch_max);
  };
}

/**
 * Rows the dispatcher may hold per slot (in flight, then waiting), per endpoint and in all: a
 * busy endpoint's next rows are at hand when a slot frees, and a claim comes once its waiting rows
 * fall to one slot's worth each, so deliveries to it cost a claim per endpoint_in_flight_max
 * answers, not one each (the claim, not the exchange, bounded one endpoint's rate). Three: a
 * waiting row has at most two waves of attempts ahead of it, well inside its lease.
 */
const lease_ahead = 3;

/**
 * Rows leased ahead of a free slot, in claim order per endpoint. Each is sent once a slot frees,
 * well within its lease: a row that waited too long (its endpoint slow) is given up to a later
 * claim, so the copy that holds it never sends it after another copy could have claimed it.
 */
class WaitingRows {
  readonly lease_max: number;
  readonly #endpoint_lease_max: number;
  readonly #wait_max_ms: number;
  readonly #pool: Pool;
  readonly #logger: Logger;
  readonly #startable: (row: Claimed) => boolean;
  readonly #rows = new Map<string, Array<{ row: Claimed; at_ms: number }>>();
  /** Endpoints whose waiting rows ran low since the last claim, and those it found with none due beyond. */
  readonly #low = new Set<string>();
  readonly #drained = new Set<string>();
  size = 0;

  constructor(options: DispatcherOptions, startable: (row: Claimed) => boolean) {
    this.lease_max = options.concurrency_max * lease_ahead;
    this.#endpoint_lease_max = options.endpoint_in_flight_max * lease_ahead;
    // Sent at the latest this long after its claim, its whole attempt then ends inside the lease.
    this.#wait_max_ms = options.lease_ms - options.attempt_timeout_ms - 1_000;
    this.#pool = options.pool;
    this.#logger = options.logger;
    this.#startable = startable;
  }

  get endpoint_lease_max(): number {
    return this.#endpoint_lease_max;
  }

  /** Few enough of the endpoint's rows at hand (one slot's worth each, or fewer) that a claim is worth its cost. */
  low(endpoint_id: string): boolean {
    return this.count(endpoint_id) * lease_ahead <= this.#endpoint_lease_max;
  }

  count(endpoint_id: string): number {
    return this.#rows.get(endpoint_id)?.length ?? 0;
  }

  add(row: Claimed): void {
    const rows = this.#rows.get(row.endpoint_id) ?? [];
    rows.push({ row, at_ms: performance.now() });
    this.#rows.set(row.endpoint_id, rows);
    this.size += 1;
  }

  /** Takes the rows that can start now (their endpoint's slot and the process's free), oldest first per endpoint. */
  *startable(): Generator<Claimed> {
    for (const [endpoint_id, rows] of this.#rows) {
      while (rows.length > 0) {
        const first = rows[0] as { row: Claimed; at_ms: number };
        const stale = performance.now() - first.at_ms > this.#wait_max_ms;
        if (!stale && !this.#startable(first.row)) break;
        rows.shift();
        this.size -= 1;
        if (!stale) yield first.row;
        else
          this.#logger.warn(
            { delivery_id: first.row.id },
            "webhook row waited too long; left to a later claim",
          );
      }
      if (rows.length === 0) this.#rows.delete(endpoint_id);
    }
  }

  /** A slot of the endpoint freed: true if its waiting rows ran low and a claim may find more. */
  ranLow(endpoint_id: string): boolean {
    if (!this.low(endpoint_id) || this.#drained.has(endpoint_id)) return false;
    this.#low.add(endpoint_id);
    return true;
  }

  /** Some endpoint ran low since the last claim and may have more due. */
  wantsClaim(): boolean {
    return [...this.#low].some((endpoint_id) => this.low(endpoint_id) && !this.#drained.has(endpoint_id));
  }

  /** New rows were enqueued: any endpoint may have some due again. */
  enqueued(): void {
    this.#drained.clear();
  }

  /** A claim starts: the rows each endpoint holds (in flight and waiting), for it to count. */
  claiming(inFlight: Map<string, number>): Map<string, number> {
    this.#low.clear();
    const held = new Map(inFlight);
    for (const [endpoint_id, rows] of this.#rows)
      held.set(endpoint_id, (held.get(endpoint_id) ?? 0) + rows.length);
    return held;
  }

  /**
   * A claim ended. One that did not fill its room took every open endpoint's due rows up to its
   * free slots: the endpoints it gave fewer than they had room for have none due beyond.
   */
  claimed(held: Map<string, number>, rows: readonly Claimed[], room: number): void {
    if (rows.length >= room) return;
    this.#drained.clear();
    const got = new Map<string, number>();
    for (const row of rows) got.set(row.endpoint_id, (got.get(row.endpoint_id) ?? 0) + 1);
    for (const endpoint_id of new Set([...held.keys(), ...got.keys()])) {
      const free = this.#endpoint_lease_max - (held.get(endpoint_id) ?? 0);
      if ((got.get(endpoint_id) ?? 0) < free) this.#drained.add(endpoint_id);
    }
  }

  /** On stop: the rows never sent go back to due at once, for any copy (their lease ends now). */
  async release(): Promise<void> {
    const rows = [...this.#rows.values()].flat().map((w) => w.row);
    this.#rows.clear();
    this.size = 0;
    if (rows.length === 0) return;
    await this.#pool
      .query(
        `UPDATE webhook_deliveries d SET next_attempt_at = now(), attempts = d.attempts - 1, claim_token = NULL
           FROM unnest($1::uuid[], $2::uuid[]) AS r(id, claim_token)
          WHERE d.id = r.id AND d.claim_token = r.claim_token AND d.state = 'pending'`,
        [rows.map((r) => r.id), rows.map((r) => r.claim_token)],
      )
      .catch((error: unknown) =>
        this.#logger.warn(
          { err: error, count: rows.length },
          "leased webhook rows not released; their lease will expire",
        ),
      );
  }
}

/**
 * One request's slot of its endpoint (this process's in-flight count), given back once: when a 2xx
 * answers it, or when its attempt ends. A delivered row stays leased until it is recorded, so no
 * claim takes it again meanwhile; the process's total still counts it until then.
 */
function holdSlot(inFlight: Map<string, number>, endpoint_id: string, freed: () => void) {
  inFlight.set(endpoint_id, (inFlight.get(endpoint_id) ?? 0) + 1);
  let held = true;
  return {
    held: () => held,
    release: () => {
      if (!held) return;
      held = false;
      const left = (inFlight.get(endpoint_id) ?? 1) - 1;
      if (left === 0) inFlight.delete(endpoint_id);
      else inFlight.set(endpoint_id, left);
      freed();
    },
  };
}

/** Due rows read in time order by a claim, per row of room, before it reads every endpoint's head. */
const window_per_room = 4;

// $1 room, $2 and $3 the rows this process holds per endpoint (in flight and leased ahead),
// $4 lease_ms, $5 the rows one endpoint may hold, $6 the window's rows.
const claimSql = `WITH RECURSIVE busy AS (SELECT * FROM unnest($2::uuid[], $3::int[]) AS b(endpoint_id, in_flight)),
  -- Endpoints that may take a row, with their free slots: enabled (the rows of the others stay
  -- out, or they could fill the claim) and below their limit in this process.
  open AS NOT MATERIALIZED (
    SELECT e.id AS endpoint_id, $5 - COALESCE(b.in_flight, 0) AS free
      FROM webhook_endpoints e LEFT JOIN busy b ON b.endpoint_id = e.id
     WHERE e.state = 'enabled' AND COALESCE(b.in_flight, 0) < $5),
  -- The oldest due rows across endpoints, a bounded read: an endpoint's first row here is its
  -- oldest due row.
  first_due AS (
    SELECT endpoint_id, next_attempt_at FROM webhook_deliveries
     WHERE state = 'pending' AND next_attempt_at <= now()
     ORDER BY next_attempt_at LIMIT $6),
  window_heads AS (
    SELECT f.endpoint_id, min(f.next_attempt_at) AS head, o.free
      FROM first_due f JOIN open o USING (endpoint_id) GROUP BY f.endpoint_id, o.free),
  -- The window decides when it holds every due row, or $1 open endpoints (any other endpoint's
  -- oldest row comes after theirs). Otherwise it is full of the rows of endpoints at their limit
  -- (one endpoint's backlog): then every endpoint's oldest pending row is read instead.
  decided AS (
    SELECT (SELECT count(*) FROM first_due) < $6 OR (SELECT count(*) FROM window_heads) >= $1 AS yes),
  -- Each endpoint with pending rows and its oldest one, by a skip scan of
  -- webhook_deliveries_endpoint_due: one index descent per endpoint, whatever its backlog.
  heads AS (
    (SELECT endpoint_id, next_attempt_at FROM webhook_deliveries WHERE state = 'pending'
      ORDER BY endpoint_id, next_attempt_at LIMIT 1)
    UNION ALL
    SELECT n.endpoint_id, n.next_attempt_at FROM heads h CROSS JOIN LATERAL (
      SELECT d.endpoint_id, d.next_attempt_at FROM webhook_deliveries d
       WHERE d.state = 'pending' AND d.endpoint_id > h.endpoint_id
       ORDER BY d.endpoint_id, d.next_attempt_at LIMIT 1) n),
  served AS (
    SELECT endpoint_id, head, free FROM window_heads WHERE (SELECT yes FROM decided)
    UNION ALL
    SELECT h.endpoint_id, h.next_attempt_at, o.free FROM heads h JOIN open o USING (endpoint_id)
     WHERE NOT (SELECT yes FROM decided) AND h.next_attempt_at <= now()
    ORDER BY head LIMIT $1),
  picked AS (
    SELECT p.id, p.next_attempt_at FROM served s CROSS JOIN LATERAL (
      SELECT d.id, d.next_attempt_at FROM webhook_deliveries d
       WHERE d.endpoint_id = s.endpoint_id AND d.state = 'pending' AND d.next_attempt_at <= now()
       ORDER BY d.next_attempt_at, d.id LIMIT s.free
       FOR UPDATE SKIP LOCKED) p),
  -- Exactly the rows this process has room for: a row leased but not sent would wait out its lease.
  chosen AS (SELECT id FROM picked ORDER BY next_attempt_at, id LIMIT $1)
UPDATE webhook_deliveries d
   SET next_attempt_at = now() + make_interval(secs => $4::int / 1000.0),
       claim_token = gen_random_uuid(), attempts = d.attempts + 1, updated_at = now()
  FROM chosen, webhook_endpoints e
 WHERE d.id = chosen.id AND e.id = d.endpoint_id
 RETURNING d.id, d.endpoint_id, d.webhook_id, d.payload::text AS body, d.attempts, d.claim_token, e.url, d.traceparent,
           d.payload->'data'->'transaction'->>'id' AS transfer_id,
           d.payload->'data'->'disbursement'->>'id' AS disbursement_id,
           array_remove(ARRAY[e.secret, CASE WHEN e.previous_secret_expires_at > now() THEN e.previous_secret END],
                        NULL) AS secrets`;

/**
 * Leases up to `room` due rows, oldest first across endpoints, leaving out endpoints at their
 * in-flight limit and taking at most the remaining room of each other endpoint. The rows taken are
 * the `room` oldest of each open endpoint's oldest due rows (as many as its free slots), so only
 * the `room` open endpoints with the oldest due rows can contribute. Those are found first (in a
 * bounded window of the oldest due rows or, when that window is full of the backlog of endpoints
 * at their limit, from every endpoint's oldest pending row), then only their rows are read: one
 * endpoint's backlog does not make every claim read it.
 */
export async function claim(
  options: DispatcherOptions,
  room: number,
  held: Map<string, number>,
  /** Rows one endpoint may hold in this process (in flight and waiting). */
  endpoint_max = options.endpoint_in_flight_max,
): Promise<Claimed[]> {
  const busy = [...held.entries()];
  // One statement, so its own transaction: no BEGIN and COMMIT round trips around it. Named, so
  // each connection parses it once: at a payer's burst the dispatcher claims after every answer.
  const rows = await options.pool.query<Claimed>({
    name: "webhook_claim",
    text: claimSql,
    values: [
      room,
      busy.map(([id]) => id),
      busy.map(([, n]) => n),
      options.lease_ms,
      endpoint_max,
      room * window_per_room,
    ],
  });
  return rows.rows;
}

/**
 * What a delivery's log lines name: the delivery, and the transfer or batch its event is about
 * (the `data` transaction-service sends: `{transaction}` or `{disbursement}`).
 */
function subjectOf(row: Claimed): Record<string, string> {
  const fields: Record<string, string> = { delivery_id: row.id, webhook_id: row.webhook_id };
  if (row.transfer_id !== null) fields.transfer_id = row.transfer_id;
  if (row.disbursement_id !== null) fields.disbursement_id = row.disbursement_id;
  return fields;
}

/** A delivery's trace (from its row), what its span and log lines name, and its logger. */
interface TracedDelivery {
  parent: Context;
  attributes: Record<string, string>;
  logger: Logger;
}

function tracedDelivery(logger: Logger, row: Claimed): TracedDelivery {
  const parent = contextFromRow(row.traceparent);
  const attributes = subjectOf(row);
  // Its lines are written outside the span: they name the delivery's trace themselves.
  return { parent, attributes, logger: logger.child({ ...traceFields(parent), ...attributes }) };
}

type RecordDelivered = (row: Claimed, outcome: Outcome) => Promise<DeliveryResult | null>;

async function attemptAndRecord(
  options: AttemptOptions,
  row: Claimed,
  traced: TracedDelivery,
  recordDelivered: RecordDelivered,
  answered: () => void,
): Promise<void> {
  const spec = { kind: "client" as const, parent: traced.parent, attributes: traced.attributes };
  const outcome = await withSpan("webhook deliver", spec, (span) => tracedAttempt(options, row, span));
  // The crash point is a send its receiver took (a 2xx) and nobody recorded: an attempt that
  // failed anyway (an endpoint long gone, still retried) is no such moment.
  if (outcome.ok) options.after_send?.(row.id);
  // A 2xx frees the endpoint's slot at once: its next request need not wait for this record. A
  // failure keeps it until recorded, so a failing endpoint gets no more requests meanwhile.
  if (outcome.ok) answered();
  const result = outcome.ok ? await recordDelivered(row, outcome) : await record(options, row, outcome);
  traced.logger.debug(
    { attempt: row.attempts, result, response_code: outcome.response_code, latency_ms: outcome.latency_ms },
    "webhook attempt",
  );
  if (result !== null) options.on_result?.(result);
}

/** The attempt inside its span: the span says how the exchange ended. */
async function tracedAttempt(options: AttemptOptions, row: Claimed, span: Span): Promise<Outcome> {
  const outcome = await attempt(options, row);
  if (outcome.response_code !== null) span.setAttribute("http.response.status_code", outcome.response_code);
  if (!outcome.ok) span.setStatus({ code: SpanStatusCode.ERROR, message: outcome.error ?? undefined });
  return outcome;
}

/**
 * One signed POST, with the active trace context's `traceparent`; never throws: every failure
 * is an outcome to log and retry.
 */
async function attempt(options: AttemptOptions, row: Claimed): Promise<Outcome> {
  const started = performance.now();
  const latency = () => Math.round(performance.now() - started);
  // One deadline for the whole attempt, DNS included; cleared when the attempt ends (an
  // AbortSignal.timeout would fire anyway, long after, and build a DOMException every time).
  const deadline = new AbortController();
  const timer = setTimeout(() => deadline.abort(), options.attempt_timeout_ms);
  const signal = deadline.signal;
  try {
    const target = await withTimeout(
      checkUrl(row.url, options.guard),
      options.attempt_timeout_ms,
      "webhook URL check",
    );
    const body = row.body;
    // The signature covers id, timestamp and body only: the trace header needs no signing.
    const headers = injectHttpHeaders({ ...signHeaders(row.webhook_id, new Date(), body, row.secrets) });
    const response_code = await post(row.endpoint_id, target, body, headers, signal, options);
    const ok = response_code >= 200 && response_code < 300;
    return { ok, response_code, latency_ms: latency(), error: ok ? null : `answered ${response_code}` };
  } catch (error) {
    return { ok: false, response_code: null, latency_ms: latency(), error: (error as Error).message };
  } finally {
    clearTimeout(timer);
  }
}

function post(
  endpoint_id: string,
  { url, address }: { url: URL; address: Parameters<typeof pinnedLookup>[0] },
  body: string,
  signed: SignedHeaders & Record<string, string>,
  signal: AbortSignal,
  options: AttemptOptions,
): Promise<number> {
  const transport = url.protocol === "https:" ? https : http;
  return new Promise<number>((resolve, reject) => {
    const request = transport.request(
      url,
      {
        method: "POST",
        // The checked address, whatever DNS says now; TLS still verifies the certificate for the host name.
        lookup: pinnedLookup(address) as never,
        agent: options.connections.agentFor(endpoint_id, url, address),
        signal,
        headers: {
          "content-type": "application/json",
          "content-length": Buffer.byteLength(body),
          "user-agent": options.user_agent ?? "distributed-payment-service-webhooks",
          ...signed,
        },
      },
      (response) => {
        let read = 0;
        // The answer's body is not used; read a bounded amount of it so the exchange completes.
        response.on("data", (chunk: Buffer) => {
          read += chunk.length;
          if (read > response_bytes_max) response.destroy();
        });
        response.on("error", reject);
        response.on("close", () => resolve(response.statusCode ?? 0));
      },
    );
    request.on("error", (error) =>
      reject(
        error.name === "AbortError" ? new Error(`no answer within ${options.attempt_timeout_ms} ms`) : error,
      ),
    );
    request.end(body);
  });
}

/**
 * Logs a failed attempt and moves the delivery on, if this attempt still holds its lease. Null when
 * the delivery is no longer this attempt's to decide (deleted, or claimed by another copy).
 */
async function record(
  options: DispatcherOptions,
  row: Claimed,
  outcome: Outcome,
): Promise<DeliveryResult | null> {
  const delay_ms = retryDelay_ms(row.attempts, options.retry);
  return withTransaction(options.pool, async (client): Promise<DeliveryResult | null> => {
    // Locked first: a concurrent endpoint deletion either ran already (nothing to record) or waits.
    const current = await client.query<{ claim_token: string | null }>(
      "SELECT claim_token FROM webhook_deliveries WHERE id = $1 FOR UPDATE",
      [row.id],
    );
    if (current.rowCount === 0) return null;
    await client.query(
      `INSERT INTO webhook_attempts (delivery_id, attempt, status, response_code, latency_ms, error)
       VALUES ($1, $2, $3, $4, $5, $6)`,
      [
        row.id,
        row.attempts,
        "failed",
        outcome.response_code,
        outcome.latency_ms,
        outcome.error?.slice(0, error_chars_max) ?? null,
      ],
    );
    // Another copy claimed it after our lease ran out (or a redelivery reset it): its attempt decides.
    if (current.rows[0]?.claim_token !== row.claim_token) return null;
    const retried = await client.query(
      `UPDATE webhook_deliveries
          SET next_attempt_at = now() + make_interval(secs => $2::bigint / 1000.0), claim_token = NULL, updated_at = now()
        WHERE id = $1 AND now() + make_interval(secs => $2::bigint / 1000.0) < retry_from + make_interval(secs => $3::bigint / 1000.0)
          -- An endpoint marked failing meanwhile (by another delivery) gets no more retries.
          AND EXISTS (SELECT 1 FROM webhook_endpoints WHERE id = endpoint_id AND state = 'enabled')`,
      [row.id, delay_ms, options.retry.window_ms],
    );
    if (retried.rowCount === 1) return "failed";
    await markFailing(client, row);
    return "gave_up";
  });
}

/**
 * Records delivered attempts, those that finish together in one statement: the first is written
 * at once, and the ones that finish while a statement runs go together in the next (at most
 * batch_max each), so a burst of answers costs a few statements, not one each.
 */
function deliveredRecorder(options: DispatcherOptions): RecordDelivered {
  type Waiting = {
    row: Claimed;
    outcome: Outcome;
    done: (result: DeliveryResult | null) => void;
    fail: (error: unknown) => void;
  };
  const waiting: Waiting[] = [];
  let writing = false;
  const write = async () => {
    writing = true;
    while (waiting.length > 0) {
      const batch = waiting.splice(0, options.batch_max);
      try {
        const delivered = await recordDeliveredMany(options, batch);
        for (const w of batch) w.done(delivered.has(w.row.id) ? "delivered" : null);
      } catch (error) {
        for (const w of batch) w.fail(error);
      }
    }
    writing = false;
  };
  return (row, outcome) =>
    new Promise((done, fail) => {
      waiting.push({ row, outcome, done, fail });
      if (!writing) void write();
    });
}

/**
 * Delivered attempts in one statement: each row is locked first, as in record(); its attempt is
 * logged if the delivery still exists, and it is marked delivered if the attempt still holds its
 * lease. Returns the ids marked delivered.
 */
async function recordDeliveredMany(
  options: DispatcherOptions,
  batch: { row: Claimed; outcome: Outcome }[],
): Promise<Set<string>> {
  const delivered = await options.pool.query<{ id: string }>(
    `WITH input AS (
       SELECT * FROM unnest($1::uuid[], $2::int[], $3::int[], $4::int[], $5::uuid[])
                  AS i(id, attempt, response_code, latency_ms, claim_token)),
     -- In id order, so that copies recording overlapping rows cannot deadlock.
     current AS (
       SELECT id, claim_token FROM webhook_deliveries WHERE id IN (SELECT id FROM input) ORDER BY id FOR UPDATE),
     logged AS (
       INSERT INTO webhook_attempts (delivery_id, attempt, status, response_code, latency_ms, error)
       SELECT i.id, i.attempt, 'succeeded', i.response_code, i.latency_ms, NULL FROM input i JOIN current c USING (id))
     UPDATE webhook_deliveries d SET state = 'delivered', claim_token = NULL, updated_at = now()
       FROM current c JOIN input i USING (id)
      WHERE d.id = c.id AND c.claim_token = i.claim_token
      RETURNING d.id`,
    [
      batch.map((b) => b.row.id),
      batch.map((b) => b.row.attempts),
      batch.map((b) => b.outcome.response_code),
      batch.map((b) => b.outcome.latency_ms),
      batch.map((b) => b.row.claim_token),
    ],
  );
  return new Set(delivered.rows.map((r) => r.id));
}

async function markFailing(client: PoolClient, row: Claimed): Promise<void> {
  await client.query(
    `UPDATE webhook_endpoints SET state = 'failing', failing_since = now(), updated_at = now()
      WHERE id = $1 AND state = 'enabled'`,
    [row.endpoint_id],
  );
  await client.query(
    `UPDATE webhook_deliveries SET state = 'failed', claim_token = NULL, updated_at = now()
      WHERE endpoint_id = $1 AND state = 'pending' AND (id = $2 OR claim_token IS NULL)`,
    [row.endpoint_id, row.id],
  );
}
