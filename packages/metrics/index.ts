/**
 * Prometheus metrics for every service: one registry per process with the catalogue's metrics
 * (catalogue.ts), typed recorders for the events the services count, scrape-time collectors for
 * figures read from an engine (outbox, lag, clearing...), Fastify hooks for HTTP, and /metrics.
 *
 * Label values are bounded twice: the recorders take route templates, states and results, never
 * ids; and each label keeps at most label_values_max distinct values, the rest counted as "other",
 * so a bug that passes an id cannot grow the exposition without bound.
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { HttpServer } from "#packages/http/server.ts";
import { withTimeout } from "#packages/runtime/index.ts";
import { type CounterSpec, catalogue, type GaugeSpec, type HistogramSpec } from "./catalogue.ts";

export { type CatalogueKey, catalogue, type MetricSpec, metricNames } from "./catalogue.ts";

export interface MetricsOptions {
  /** Node.js process metrics (CPU, memory, event loop lag, GC) as well; default true. */
  default_metrics?: boolean;
  /** Bound on each scrape-time collector; a slow engine must not stall the scrape. */
  collect_timeout_ms?: number;
  /** Distinct values one label may take before further values are counted as "other". */
  label_values_max?: number;
  /** Told why a scrape-time collector failed (the service logs it); the failure is counted anyway. */
  on_collect_error?: (collector: string, error: unknown) => void;
}

/** Transfers not yet final, per saga state, as the saga's table has them at scrape time. */
export interface InFlightRow {
  state: string;
  count: number;
  oldest_age_seconds: number;
  /** Of count, those older than the deadline by which a transfer must be final. */
  overdue: number;
}

export interface OutboxRow {
  outbox: string;
  depth: number;
  /** 0 when the outbox is empty. */
  oldest_age_seconds: number;
}

export interface LagRow {
  group: string;
  topic: string;
  partition: number;
  lag: number;
}

export interface ClearingRow {
  /** The clearing account's balance, in minor units (a bigint from PostgreSQL). */
  held_minor: bigint | number | string;
  holds_open: number;
  /** 0 when no hold is open. */
  oldest_hold_age_seconds: number;
}

/** The dead letters from one origin topic, as the dead-letter topic has them (its letters and replay markers). */
export interface DeadLetterRow {
  topic: string;
  open: number;
  replayed: number;
}

export type Query<T> = () => Promise<T>;

export const OTHER = "other";
/** The route label of a request that matched no route: the raw URL would be unbounded. */
export const UNMATCHED_ROUTE = "unmatched";

/** One process's metrics: create once at start-up and pass it to whatever records. */
export class Metrics {
  readonly registry = new Registry();
  readonly #collect_timeout_ms: number;
  readonly #label_values_max: number;
  readonly #on_collect_error: (collector: string, error: unknown) => void;
  readonly #seen = new Map<string, Set<string>>();
  readonly #collectors = new Map<string, () => Promise<void>>();
  readonly #unlabelled = new WeakSet<Gauge>();

  readonly #http_requests;
  readonly #http_duration;
  readonly #transfer_transitions;
  readonly #transfer_duration;
  readonly #transfers_in_flight;
  readonly #transfer_oldest_age;
  readonly #transfers_overdue;
  readonly #outbox_depth;
  readonly #outbox_oldest_age;
  readonly #kafka_consumer_lag;
  readonly #kafka_messages_handled;
  readonly #dead_letters;
  readonly #dead_letters_replayed;
  readonly #dead_letters_open;
  readonly #ledger_batch_size;
  readonly #ledger_commit_duration;
  readonly #record_writes;
  readonly #cache_lookups;
  readonly #rate_limit_refusals;
  readonly #webhook_deliveries;
  readonly #clearing_held;
  readonly #clearing_holds_open;
  readonly #clearing_oldest_hold_age;
  readonly #collect_errors;

  constructor(options: MetricsOptions = {}) {
    this.#collect_timeout_ms = options.collect_timeout_ms ?? 2_000;
    this.#label_values_max = options.label_values_max ?? 100;
    this.#on_collect_error = options.on_collect_error ?? (() => {});
    if (options.default_metrics ?? true) collectDefaultMetrics({ register: this.registry });
    const c = catalogue;
    this.#http_requests = this.#counter(c.http_requests);
    this.#http_duration = this.#histogram(c.http_duration);
    this.#transfer_transitions = this.#counter(c.transfer_transitions);
    this.#transfer_duration = this.#histogram(c.transfer_duration);
    this.#transfers_in_flight = this.#gauge(c.transfers_in_flight);
    this.#transfer_oldest_age = this.#gauge(c.transfer_oldest_age);
    this.#transfers_overdue = this.#gauge(c.transfers_overdue);
    this.#outbox_depth = this.#gauge(c.outbox_depth);
    this.#outbox_oldest_age = this.#gauge(c.outbox_oldest_age);
    this.#kafka_consumer_lag = this.#gauge(c.kafka_consumer_lag);
    this.#kafka_messages_handled = this.#counter(c.kafka_messages_handled);
    this.#dead_letters = this.#counter(c.dead_letters);
    this.#dead_letters_replayed = this.#gauge(c.dead_letters_replayed);
    this.#dead_letters_open = this.#gauge(c.dead_letters_open);
    this.#ledger_batch_size = this.#histogram(c.ledger_batch_size);
    this.#ledger_commit_duration = this.#histogram(c.ledger_commit_duration);
    this.#record_writes = this.#counter(c.record_writes);
    this.#cache_lookups = this.#counter(c.cache_lookups);
    this.#rate_limit_refusals = this.#counter(c.rate_limit_refusals);
    this.#webhook_deliveries = this.#counter(c.webhook_deliveries);
    this.#clearing_held = this.#gauge(c.clearing_held);
    this.#clearing_holds_open = this.#gauge(c.clearing_holds_open);
    this.#clearing_oldest_hold_age = this.#gauge(c.clearing_oldest_hold_age);
    this.#collect_errors = this.#counter(c.collect_errors);
  }

  // --- HTTP ------------------------------------------------------------------------------------

  /** One answered request; route is the route template (/transactions/:id), never the URL. */
  httpRequest(listener: string, method: string, route: string, status: number, duration_ms: number): void {
    const base = { listener, method, route };
    this.#http_requests.inc(this.#bound("http", { ...base, status: String(status) }));
    this.#http_duration.observe(
      this.#bound("http", { ...base, status_class: `${Math.floor(status / 100)}xx` }),
      duration_ms / 1000,
    );
  }

  // --- Saga (transaction-service) --------------------------------------------------------------

  /** A transfer entered a saga state (call with "created" for a new transfer). */
  transferEntered(state: string): void {
    this.#transfer_transitions.inc(this.#bound("saga", { state }));
  }

  /** A transfer reached its final state; created_at is when it was created. */
  transferFinished(outcome: string, created_at: Date | string, now_ms = Date.now()): void {
    const age_ms = Math.max(0, now_ms - new Date(created_at).getTime());
    // An unreadable timestamp would add NaN to the histogram's sum for good.
    if (!Number.isFinite(age_ms)) return;
    this.#transfer_duration.observe(this.#bound("saga", { outcome }), age_ms / 1000);
  }

  /** At each scrape: the transfers not yet final, per state (dps_transfers_in_flight and kin). */
  collectTransfersInFlight(query: Query<InFlightRow[]>): void {
    const gauges = [this.#transfers_in_flight, this.#transfer_oldest_age, this.#transfers_overdue];
    this.#collector("transfers_in_flight", gauges, query, (rows) => {
      for (const row of rows) {
        const labels = this.#bound("saga", { state: row.state });
        this.#transfers_in_flight.set(labels, row.count);
        this.#transfer_oldest_age.set(labels, row.oldest_age_seconds);
        this.#transfers_overdue.set(labels, row.overdue);
      }
    });
  }

  // --- Outboxes ----------------------------------------------------------------------------------

  /** At each scrape: depth and oldest row of each outbox (saga messages, webhooks...). */
  collectOutbox(query: Query<OutboxRow[]>): void {
    this.#collector("outbox", [this.#outbox_depth, this.#outbox_oldest_age], query, (rows) => {
      for (const row of rows) {
        const labels = this.#bound("outbox", { outbox: row.outbox });
        this.#outbox_depth.set(labels, row.depth);
        this.#outbox_oldest_age.set(labels, row.oldest_age_seconds);
      }
    });
  }

  // --- Kafka -------------------------------------------------------------------------------------

  /** At each scrape: the lag of each partition this process consumes. */
  collectConsumerLag(query: Query<LagRow[]>): void {
    this.#collector("consumer_lag", [this.#kafka_consumer_lag], query, (rows) => {
      for (const row of rows) {
        const labels = { group: row.group, topic: row.topic, partition: String(row.partition) };
        this.#kafka_consumer_lag.set(this.#bound("kafka", labels), row.lag);
      }
    });
  }

  /** A consumer finished with a message: ok, duplicate, invalid or dead_lettered. */
  messageHandled(group: string, topic: string, result: string): void {
    this.#kafka_messages_handled.inc(this.#bound("kafka", { group, topic, result }));
  }

  // --- Dead letters ------------------------------------------------------------------------------

  /**
   * The topics this process may dead-letter from, shown at 0 from the start: a counter that
   * appears only with its first dead letter would hide that one from increase() in the alerts.
   */
  declareDeadLetterTopics(topics: readonly string[]): void {
    for (const topic of topics) {
      const labels = this.#bound("dead_letters", { topic });
      this.#dead_letters.inc(labels, 0);
    }
  }

  /** A message from `topic` was sent to the dead-letter topic. */
  deadLettered(topic: string): void {
    this.#dead_letters.inc(this.#bound("dead_letters", { topic }));
  }

  /** At each scrape: the dead letters open and replayed, by the topic they came from. */
  collectDeadLetters(query: Query<DeadLetterRow[]>): void {
    const gauges = [this.#dead_letters_open, this.#dead_letters_replayed];
    this.#collector("dead_letters", gauges, query, (rows) => {
      for (const row of rows) {
        const labels = this.#bound("dead_letters", { topic: row.topic });
        this.#dead_letters_open.set(labels, row.open);
        this.#dead_letters_replayed.set(labels, row.replayed);
      }
    });
  }

  // --- Ledger (user-service) ---------------------------------------------------------------------

  /** One ledger transaction of batch_size steps ended; result is ok or error. */
  ledgerCommitted(batch_size: number, duration_ms: number, result: "ok" | "error"): void {
    if (result === "ok") this.#ledger_batch_size.observe(batch_size);
    this.#ledger_commit_duration.observe({ result }, duration_ms / 1000);
  }

  /** At each scrape: what clearing holds, from the ledger. */
  collectClearing(query: Query<ClearingRow>): void {
    const gauges = [this.#clearing_held, this.#clearing_holds_open, this.#clearing_oldest_hold_age];
    this.#collector("clearing", gauges, query, (row) => {
      this.#clearing_held.set(Number(BigInt(row.held_minor)));
      this.#clearing_holds_open.set(row.holds_open);
      this.#clearing_oldest_hold_age.set(row.oldest_hold_age_seconds);
    });
  }

  // --- Records, cache, rate limits, webhooks -----------------------------------------------------

  /** A record write ended: written, unchanged (a replay), refused (a status moving back), error. */
  recordWrite(result: string): void {
    this.#record_writes.inc(this.#bound("records", { result }));
  }

  cacheLookup(cache: string, hit: boolean): void {
    this.#cache_lookups.inc(this.#bound("cache", { cache, result: hit ? "hit" : "miss" }));
  }

  /** A request answered 429 by `limit` (the limit's name, e.g. per_client or global). */
  rateLimitRefused(route: string, limit: string): void {
    this.#rate_limit_refusals.inc(this.#bound("http", { route, limit }));
  }

  /** A webhook delivery attempt ended: delivered, failed (to be retried) or gave_up. */
  webhookDelivery(result: string): void {
    this.#webhook_deliveries.inc(this.#bound("webhooks", { result }));
  }

  // --- Exposition --------------------------------------------------------------------------------

  /** The Prometheus text exposition, after running every scrape-time collector. */
  async exposition(): Promise<string> {
    await Promise.all([...this.#collectors.values()].map((collect) => collect()));
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  // --- Internals ---------------------------------------------------------------------------------

  /**
   * Register a scrape-time collector under `name` (a second call replaces the first) that sets
   * `gauges` afresh at each scrape. A failed or slow query leaves them out of that scrape rather
   * than failing the whole scrape or showing stale figures; the failure is counted.
   */
  #collector<T>(name: string, gauges: Gauge[], query: Query<T>, apply: (value: T) => void): void {
    this.#collectors.set(name, async () => {
      try {
        const value = await withTimeout(query(), this.#collect_timeout_ms, `metrics collector ${name}`);
        for (const gauge of gauges) this.#clear(gauge);
        apply(value);
      } catch (error) {
        for (const gauge of gauges) this.#clear(gauge);
        this.#collect_errors.inc({ collector: name });
        this.#on_collect_error(name, error);
      }
    });
  }

  /** Each label value is kept only while the label has fewer than label_values_max values. */
  #bound<L extends Record<string, string>>(scope: string, labels: L): L {
    const out: Record<string, string> = {};
    for (const [name, value] of Object.entries(labels)) {
      const key = `${scope}/${name}`;
      const seen = this.#seen.get(key) ?? new Set<string>();
      this.#seen.set(key, seen);
      if (!seen.has(value) && seen.size >= this.#label_values_max) {
        out[name] = OTHER;
        continue;
      }
      seen.add(value);
      out[name] = value;
    }
    return out as L;
  }

  #counter<L extends string>(spec: CounterSpec<L>): Counter<L> {
    return new Counter({ ...this.#common(spec) });
  }

  /** Every gauge is read at scrape time: none shows until its collector has run. */
  #gauge<L extends string>(spec: GaugeSpec<L>): Gauge<L> {
    const gauge = new Gauge({ ...this.#common(spec) });
    if (spec.label_names.length === 0) this.#unlabelled.add(gauge);
    this.#clear(gauge);
    return gauge;
  }

  /**
   * No sample at all: reset() alone leaves a gauge without labels at 0, which would read as
   * "nothing held" when the truth is "not known".
   */
  #clear(gauge: Gauge): void {
    gauge.reset();
    if (this.#unlabelled.has(gauge)) gauge.remove();
  }

  #histogram<L extends string>(spec: HistogramSpec<L>): Histogram<L> {
    return new Histogram({ ...this.#common(spec), buckets: [...spec.buckets] });
  }

  #common<L extends string>(spec: { name: string; help: string; label_names: readonly L[] }) {
    return {
      name: spec.name,
      help: spec.help,
      labelNames: [...spec.label_names],
      registers: [this.registry],
    };
  }
}

/** The registry factory: one Metrics per process (each has its own registry). */
export function createMetrics(options: MetricsOptions = {}): Metrics {
  return new Metrics(options);
}

// --- Fastify -------------------------------------------------------------------------------------

/**
 * Count and time every request of `app` under `listener` (public or internal). The route label is
 * the route's template; a request that matched no route counts as "unmatched".
 */
export function instrumentHttp(app: HttpServer, metrics: Metrics, listener: string): void {
  const started = new WeakMap<object, bigint>();
  app.addHook("onRequest", async (request) => {
    started.set(request, process.hrtime.bigint());
  });
  app.addHook("onResponse", async (request, reply) => {
    const start = started.get(request);
    const duration_ms =
      start === undefined ? reply.elapsedTime : Number(process.hrtime.bigint() - start) / 1e6;
    const route = request.routeOptions.url ?? UNMATCHED_ROUTE;
    metrics.httpRequest(listener, request.method, route, reply.statusCode, duration_ms);
  });
}

/** GET /metrics on `app`: the Prometheus text format (for the internal listener). */
export function serveMetrics(app: HttpServer, metrics: Metrics): void {
  app.get("/metrics", { schema: { hide: true } }, async (_request, reply) => {
    const body = await metrics.exposition();
    return reply.header("content-type", metrics.contentType).send(body);
  });
}
