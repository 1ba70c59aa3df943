/**
 * PostgreSQL plumbing: a bounded pool with statement and connection timeouts, whose
 * parameterised statements are prepared once per connection, a transaction helper, and a
 * migration runner that applies a service's numbered .sql files exactly once (under an advisory
 * lock, so several instances starting together do not race).
 */
import { createHash } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import pg from "pg";

export type Pool = pg.Pool;
export type PoolClient = pg.PoolClient;

/**
 * Distinct statement texts given a name (prepared); beyond it, a text runs unnamed. Every text
 * the services send is a constant (arrays travel as parameters), so this is a guard, not a cache.
 */
export const PREPARED_TEXTS_MAX = 500;
const preparedNames = new Map<string, string>();

/** The prepared statement's name for a parameterised text, or undefined to run it unnamed. */
export function preparedNameOf(text: string): string | undefined {
  const known = preparedNames.get(text);
  if (known !== undefined || preparedNames.size >= PREPARED_TEXTS_MAX) return known;
  const name = `dps_${createHash("sha1").update(text).digest("hex").slice(0, 20)}`;
  preparedNames.set(text, name);
  return name;
}

/**
 * A connection's executions of one statement after which it is prepared anew (a new name; the old
 * one is deallocated). PostgreSQL plans a prepared statement afresh for its first five runs, then
 * keeps one generic plan, made with the table sizes of that moment, until an ANALYZE of its tables
 * invalidates it. A service that starts on empty tables would keep plans made for empty tables
 * (a sequential scan of `transfers` for every transition, 4 ms at 2,000 rows) until the first
 * autovacuum ANALYZE, up to a minute later. Tables grow with the statements that fill them, so
 * planning again each time a statement's runs have quadrupled follows the growth; past the last
 * step, the plans are those of a table that ANALYZE keeps measured.
 */
export const REPLAN_AT_EXECUTIONS = [64, 256, 1_024, 4_096, 16_384, 65_536] as const;

/** How many REPLAN_AT_EXECUTIONS steps `executions` runs have passed. */
export function planGenerationOf(executions: number): number {
  return REPLAN_AT_EXECUTIONS.filter((step) => executions >= step).length;
}

/**
 * A client that names every parameterised statement, so that PostgreSQL parses and plans it once
 * per connection rather than at every call: the saga's batched statements (CTEs over a dozen
 * arrays) took longer to plan than to run. Statements without parameters (migrations, BEGIN,
 * COMMIT) run as given. Each is prepared again as its runs pass REPLAN_AT_EXECUTIONS.
 */
class PreparingClient extends pg.Client {
  /** Runs of each named statement on this connection (bounded by PREPARED_TEXTS_MAX). */
  readonly #executions = new Map<string, number>();

  constructor(config?: string | pg.ClientConfig) {
    super(config);
    const query = this.query.bind(this) as (config: unknown, values?: unknown, callback?: unknown) => unknown;
    const preparing = (config: unknown, values?: unknown, callback?: unknown): unknown => {
      const base =
        typeof config === "string" && Array.isArray(values) && values.length > 0
          ? preparedNameOf(config)
          : undefined;
      if (base === undefined) return query(config, values, callback);
      const executions = (this.#executions.get(config as string) ?? 0) + 1;
      this.#executions.set(config as string, executions);
      const generation = planGenerationOf(executions);
      const previous = `${base}_${generation - 1}`;
      // Only a statement this connection really prepared (the driver's own record): DEALLOCATE of
      // an unknown name is an error, and inside the caller's transaction it would abort it.
      if (generation > planGenerationOf(executions - 1) && this.#prepared(previous)) {
        // Queued before the statement, on this connection. Its only possible failure is a
        // transaction the caller's statement finds aborted anyway; it then stays allocated.
        (query(`DEALLOCATE ${previous}`) as Promise<unknown>).catch(() => {});
      }
      return query({ name: `${base}_${generation}`, text: config, values }, callback);
    };
    (this as unknown as { query: typeof preparing }).query = preparing;
  }

  /** Whether PostgreSQL confirmed `name` on this connection (pg records it at ParseComplete). */
  #prepared(name: string): boolean {
    const connection = (this as unknown as { connection?: { parsedStatements?: Record<string, string> } })
      .connection;
    return connection?.parsedStatements?.[name] !== undefined;
  }
}

export function createPool(
  url: string,
  options: { max?: number; statement_timeout_ms?: number; application_name: string },
): Pool {
  const pool = new pg.Pool({
    Client: PreparingClient,
    connectionString: url,
    max: options.max ?? 20,
    connectionTimeoutMillis: 5_000,
    idleTimeoutMillis: 30_000,
    statement_timeout: options.statement_timeout_ms ?? 10_000,
    query_timeout: (options.statement_timeout_ms ?? 10_000) + 1_000,
    application_name: options.application_name,
  });
  // An idle client that loses its connection (PostgreSQL restarted) emits 'error' on the
  // pool; without a listener that would crash the process. The pool replaces the client.
  pool.on("error", () => {});
  return pool;
}

export async function withTransaction<T>(pool: Pool, fn: (client: PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  // A checked-out client whose connection dies (PostgreSQL restarting) emits 'error' besides
  // failing its query; unhandled, that event would crash the process. The failed query is
  // what the caller acts on.
  const onError = () => {};
  client.on("error", onError);
  let broken: unknown;
  try {
    await client.query("BEGIN");
    const result = await fn(client);
    await client.query("COMMIT");
    return result;
  } catch (error) {
    broken = isTransientPgError(error) ? error : undefined;
    await client.query("ROLLBACK").catch(() => {});
    throw error;
  } finally {
    client.off("error", onError);
    // A client whose connection failed is destroyed, not handed to the next caller.
    client.release(broken instanceof Error ? broken : undefined);
  }
}

/** Errors that mean "the database is unreachable or restarting", worth retrying later. */
export function isTransientPgError(error: unknown): boolean {
  const code = (error as { code?: string }).code ?? "";
  if (
    [
      "ECONNREFUSED",
      "ECONNRESET",
      "ETIMEDOUT",
      "EPIPE",
      "57P01",
      "57P02",
      "57P03",
      "53300",
      "08006",
      "08001",
      "08003",
      "08004",
      "40001",
      "40P01",
    ].includes(code)
  ) {
    return true;
  }
  const message = (error as Error).message ?? "";
  return /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|the database system is (starting up|shutting down)/i.test(
    message,
  );
}

export async function migrate(pool: Pool, directory: string): Promise<string[]> {
  const files = (await readdir(directory)).filter((f) => /^\d{3}_.+\.sql$/.test(f)).sort();
  const applied: string[] = [];
  await withTransaction(pool, async (client) => {
    // One lock id for every migrating instance of every service in this database.
    await client.query("SELECT pg_advisory_xact_lock(727274)");
    await client.query(
      "CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
    );
    const done = new Set(
      (await client.query<{ name: string }>("SELECT name FROM schema_migrations")).rows.map((r) => r.name),
    );
    for (const file of files) {
      if (done.has(file)) continue;
      await client.query(await readFile(join(directory, file), "utf8"));
      await client.query("INSERT INTO schema_migrations (name) VALUES ($1)", [file]);
      applied.push(file);
    }
  });
  return applied;
}
