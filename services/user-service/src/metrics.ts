/**
 * What user-service tells Prometheus beyond HTTP: each ledger batch's size and commit time, and,
 * at each scrape, what clearing holds.
 */
import type { Metrics } from "#packages/metrics/index.ts";
import type { Pool } from "#packages/pg/index.ts";

/** Times one ledger batch (one transaction) of `size` steps; a thrown error counts as `error`. */
export async function timedBatch<T>(
  metrics: Metrics | undefined,
  size: number,
  apply: () => Promise<T>,
): Promise<T> {
  const started = performance.now();
  try {
    const result = await apply();
    metrics?.ledgerCommitted(size, performance.now() - started, "ok");
    return result;
  } catch (error) {
    metrics?.ledgerCommitted(size, performance.now() - started, "error");
    throw error;
  }
}

/**
 * Clearing's balance is the sum of the open holds (the audit checks that they are equal); the
 * open holds are read through a partial index on state = 'held', so the query stays small however
 * long the journal grows, where summing clearing's entries would read all of them.
 */
export function collectClearing(metrics: Metrics, pool: Pool): void {
  metrics.collectClearing(async () => {
    const { rows } = await pool.query<{ held: string; n: string; age_s: number | null }>(
      `SELECT coalesce(sum(amount_minor), 0)::text AS held, count(*) AS n,
              extract(epoch FROM now() - min(created_at))::float8 AS age_s
         FROM holds WHERE state = 'held'`,
    );
    const row = rows[0];
    return {
      held_minor: row?.held ?? "0",
      holds_open: Number(row?.n ?? 0),
      oldest_hold_age_seconds: Math.max(0, row?.age_s ?? 0),
    };
  });
}
