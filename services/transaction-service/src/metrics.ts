/**
 * What transaction-service tells Prometheus beyond HTTP: saga transitions and durations as they
 * commit, and, at each scrape, the transfers not yet final, the outbox and the event consumer's
 * lag, read from PostgreSQL and Kafka.
 */
import type { Metrics } from "#packages/metrics/index.ts";
import type { Pool } from "#packages/pg/index.ts";
import { isFinal } from "./saga/machine.ts";
import type { StoredTransfer } from "./saga/store.ts";

/** Count a committed transition, and time a transfer that has just become final. */
export function recordTransition(metrics: Metrics, transfer: StoredTransfer): void {
  metrics.transferEntered(transfer.state);
  // Both times are PostgreSQL's: no clock skew between copies of the service.
  if (isFinal(transfer.state)) {
    metrics.transferFinished(transfer.state, transfer.created_at, Date.parse(transfer.updated_at));
  }
}

/**
 * Scrape-time figures from the saga's database. The unfinished transfers are those of the sweep's
 * partial index (transfers_due), so the query reads only them however long the table grows.
 */
export function collectSaga(metrics: Metrics, pool: Pool, transfer_deadline_ms: number): void {
  metrics.collectTransfersInFlight(async () => {
    const { rows } = await pool.query<{ state: string; n: string; age_s: number; overdue: string }>(
      `SELECT state, count(*) AS n, extract(epoch FROM now() - min(created_at))::float8 AS age_s,
              count(*) FILTER (WHERE created_at < now() - $1 * interval '1 millisecond') AS overdue
         FROM transfers WHERE state NOT IN ('completed', 'failed') GROUP BY state`,
      [transfer_deadline_ms],
    );
    return rows.map((r) => ({
      state: r.state,
      count: Number(r.n),
      oldest_age_seconds: Math.max(0, r.age_s),
      overdue: Number(r.overdue),
    }));
  });
  metrics.collectOutbox(async () => {
    const { rows } = await pool.query<{ n: string; age_s: number | null }>(
      "SELECT count(*) AS n, extract(epoch FROM now() - min(created_at))::float8 AS age_s FROM outbox",
    );
    const row = rows[0];
    return [{ outbox: "saga", depth: Number(row?.n ?? 0), oldest_age_seconds: Math.max(0, row?.age_s ?? 0) }];
  });
}
