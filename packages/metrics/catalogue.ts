/**
 * Every metric of the system: name, help, label names and buckets, in one place, so that the
 * services, the alert rules and the dashboard agree on names (tests check the last two against
 * this list). Labels are bounded by design: route templates, status codes, states, outcomes,
 * topics, partitions; never a transfer, user or request id.
 */

export interface CounterSpec<L extends string = string> {
  type: "counter";
  name: string;
  help: string;
  label_names: readonly L[];
}

export interface GaugeSpec<L extends string = string> {
  type: "gauge";
  name: string;
  help: string;
  label_names: readonly L[];
}

export interface HistogramSpec<L extends string = string> {
  type: "histogram";
  name: string;
  help: string;
  label_names: readonly L[];
  buckets: readonly number[];
}

export type MetricSpec = CounterSpec | GaugeSpec | HistogramSpec;

const counter = <L extends string>(
  name: string,
  help: string,
  label_names: readonly L[],
): CounterSpec<L> => ({
  type: "counter",
  name,
  help,
  label_names,
});

const gauge = <L extends string>(name: string, help: string, label_names: readonly L[]): GaugeSpec<L> => ({
  type: "gauge",
  name,
  help,
  label_names,
});

const histogram = <L extends string>(
  name: string,
  help: string,
  label_names: readonly L[],
  buckets: readonly number[],
): HistogramSpec<L> => ({ type: "histogram", name, help, label_names, buckets });

/** Request latency: from a 5 ms cache hit to the 30 s request timeout. */
const HTTP_SECONDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
/** Created to final: a healthy saga takes well under a second; recovery after faults, minutes. */
const SAGA_SECONDS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600];
/** One ledger commit: a round trip to PostgreSQL, up to a stalled disk. */
const COMMIT_SECONDS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
/** Steps per ledger commit, up to the batcher's largest batch. */
const BATCH_SIZES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

export const catalogue = {
  http_requests: counter(
    "dps_http_requests_total",
    "HTTP requests answered, by listener (public or internal), method, route template and status code.",
    ["listener", "method", "route", "status"],
  ),
  http_duration: histogram(
    "dps_http_request_duration_seconds",
    "Time from receiving an HTTP request to sending its response, by route template and status class.",
    ["listener", "method", "route", "status_class"],
    HTTP_SECONDS,
  ),
  transfer_transitions: counter(
    "dps_transfer_transitions_total",
    "Saga transitions, by the state the transfer entered (created counts new transfers).",
    ["state"],
  ),
  transfer_duration: histogram(
    "dps_transfer_duration_seconds",
    "Time from a transfer's creation to its final state, by outcome (completed or failed).",
    ["outcome"],
    SAGA_SECONDS,
  ),
  transfers_in_flight: gauge(
    "dps_transfers_in_flight",
    "Transfers not yet final, by saga state (read from the saga's table at scrape time).",
    ["state"],
  ),
  transfer_oldest_age: gauge(
    "dps_transfer_oldest_age_seconds",
    "Age of the oldest transfer not yet final, by saga state.",
    ["state"],
  ),
  transfers_overdue: gauge(
    "dps_transfers_overdue",
    "Transfers not yet final although older than the deadline by which every transfer must be final.",
    ["state"],
  ),
  outbox_depth: gauge("dps_outbox_depth", "Rows waiting in an outbox to be published.", ["outbox"]),
  outbox_oldest_age: gauge(
    "dps_outbox_oldest_age_seconds",
    "Age of the oldest row waiting in an outbox (0 when it is empty).",
    ["outbox"],
  ),
  kafka_consumer_lag: gauge(
    "dps_kafka_consumer_lag_messages",
    "Messages on a partition not yet committed by the consumer group (high watermark minus committed offset).",
    ["group", "topic", "partition"],
  ),
  kafka_messages_handled: counter(
    "dps_kafka_messages_handled_total",
    "Kafka messages a consumer finished with, by topic and result (ok, duplicate, invalid, dead_lettered).",
    ["group", "topic", "result"],
  ),
  dead_letters: counter(
    "dps_dead_letters_total",
    "Messages sent to the dead-letter topic, by the topic they came from.",
    ["topic"],
  ),
  dead_letters_replayed: gauge(
    "dps_dead_letters_replayed",
    "Dead letters sent back to the topic they came from, by that topic (as the dead-letter topic records them).",
    ["topic"],
  ),
  dead_letters_open: gauge(
    "dps_dead_letters_open",
    "Dead letters not yet replayed, by the topic they came from (as the dead-letter topic records them).",
    ["topic"],
  ),
  ledger_batch_size: histogram(
    "dps_ledger_batch_size",
    "Saga steps (hold, post, void) committed together in one ledger transaction.",
    [],
    BATCH_SIZES,
  ),
  ledger_commit_duration: histogram(
    "dps_ledger_commit_duration_seconds",
    "Time of one ledger transaction, from BEGIN to the end of COMMIT, by result (ok or error).",
    ["result"],
    COMMIT_SECONDS,
  ),
  record_writes: counter(
    "dps_record_writes_total",
    "Transaction record writes, by result (written, unchanged, refused, error).",
    ["result"],
  ),
  cache_lookups: counter("dps_cache_lookups_total", "Cache lookups, by cache and result (hit or miss).", [
    "cache",
    "result",
  ]),
  rate_limit_refusals: counter(
    "dps_rate_limit_refusals_total",
    "Requests refused with 429, by route template and the limit that refused them.",
    ["route", "limit"],
  ),
  webhook_deliveries: counter(
    "dps_webhook_deliveries_total",
    "Webhook delivery attempts, by result (delivered, failed, gave_up).",
    ["result"],
  ),
  clearing_held: gauge(
    "dps_clearing_held_minor",
    "Money held in the clearing account, in minor units (read from the ledger at scrape time).",
    [],
  ),
  clearing_holds_open: gauge(
    "dps_clearing_holds_open",
    "Holds not yet posted or voided (each one is money in clearing).",
    [],
  ),
  clearing_oldest_hold_age: gauge(
    "dps_clearing_oldest_hold_age_seconds",
    "Age of the oldest hold not yet posted or voided (0 when clearing is empty).",
    [],
  ),
  collect_errors: counter(
    "dps_metrics_collect_errors_total",
    "Scrape-time collectors that failed or timed out (their gauges are left out of that scrape).",
    ["collector"],
  ),
} as const;

export type CatalogueKey = keyof typeof catalogue;

/** The names of every metric in the catalogue, as they appear in PromQL (histograms by base name). */
export const metricNames: readonly string[] = Object.values(catalogue).map((spec) => spec.name);
