// PostgreSQL 15 from Debian, but our OWN cluster in .data/postgres (the Debian default cluster, if
// apt started one, is left alone: we listen on another port and socket dir).
import { createHash } from "node:crypto";
import {
  chmodSync,
  chownSync,
  closeSync,
  existsSync,
  mkdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { dirname, join, parse } from "node:path";
import pg from "pg";
import { aptInstall, type Engine, logFileOf, makeEngine, say } from "../engine.ts";
import { secrets } from "../env.ts";
import { envPort, logsDir, runDir, dataDir as stackDataDir } from "../paths.ts";
import { cmdline, isAlive, isRoot, openAppend, readPidFile, run, signal } from "../proc.ts";

const binDir = process.env.DPS_PG_BIN_DIR || "/usr/lib/postgresql/15/bin";
/** pgbench ships with the server package; the benchmark's baseline runs it. */
export const pgbenchPath = join(binDir, "pgbench");
export const pgHost = "127.0.0.1";
export const pgPort = envPort("DPS_PG_PORT", 55432);
/**
 * The stack's own role, a superuser: it creates the databases, runs the benchmark's pgbench
 * baseline and FerretDB (which creates schemas and an event trigger). The services never use it.
 */
export const pgUser = process.env.DPS_PG_USER || "dps";
export const pgPassword = process.env.DPS_PG_PASSWORD || "dps";
/**
 * The services' roles: not superusers, each the owner of its own databases only (and so able to
 * migrate them), unable to connect to the other's. Passwords: LEDGER_DB_PASSWORD, SAGA_DB_PASSWORD.
 */
export const ledgerRole = "ledger_service";
export const sagaRole = "saga_service";

const dataDir = join(stackDataDir, "postgres");
const logFile = logFileOf("postgres");

// A unix socket path must fit in 107 bytes; deep checkouts fall back to a short dir in /tmp.
const socketDir = ((): string => {
  const local = join(runDir, "postgres");
  if (`${local}/.s.PGSQL.${pgPort}`.length <= 100) return local;
  return `/tmp/dps-pg-${createHash("sha1").update(stackDataDir).digest("hex").slice(0, 10)}`;
})();

/** A URL on our server; as the stack's superuser unless a role is given. */
export function pgUrl(
  database: string,
  as: { user: string; password: string } = { user: pgUser, password: pgPassword },
): string {
  return `postgres://${encodeURIComponent(as.user)}:${encodeURIComponent(as.password)}@${pgHost}:${pgPort}/${database}`;
}

/** Who owns a database: the saga's and the ledger's (the benchmark's baseline too) their service's role. */
export function ownerOf(database: string): string {
  if (database.endsWith("_saga")) return sagaRole;
  if (database.endsWith("_ledger") || database === "dps_bench_baseline") return ledgerRole;
  return pgUser;
}

interface OsUser {
  uid: number;
  gid: number;
}

/** uid/gid of the `postgres` OS user (created by the Debian package). */
function postgresOsUser(): OsUser {
  for (const line of readFileSync("/etc/passwd", "utf8").split("\n")) {
    const [name, , uid, gid] = line.split(":");
    if (name === "postgres") return { uid: Number(uid), gid: Number(gid) };
  }
  throw new Error("no postgres OS user; is postgresql-15 installed?");
}

/** PostgreSQL refuses to run as root: as root we run its tools as the postgres OS user. */
function asPostgres(bin: string, args: string[]): [string, string[]] {
  const path = join(binDir, bin);
  return isRoot() ? ["runuser", ["-u", "postgres", "--", path, ...args]] : [path, args];
}

/** Makes dir exist, owned by the postgres OS user when we are root. */
function ownedDir(dir: string, mode: number): void {
  mkdirSync(dir, { recursive: true, mode });
  chmodSync(dir, mode);
  if (isRoot()) {
    const u = postgresOsUser();
    chownSync(dir, u.uid, u.gid);
  }
}

/**
 * As root, the postgres user must be able to walk down to .data (a checkout under /root is not
 * searchable by others). Grant search (x, not read) on the ancestors that lack it, and say so.
 */
function ensureTraversable(dir: string): void {
  if (!isRoot()) return;
  const root = parse(dir).root;
  for (let d = dirname(dir); d !== root; d = dirname(d)) {
    const st = statSync(d);
    if ((st.mode & 0o001) === 0) {
      chmodSync(d, (st.mode & 0o7777) | 0o001);
      say("postgres", `granted o+x on ${d} so the postgres OS user can reach ${dir}`);
    }
  }
}

/** Settings we own; rewritten at every start so env changes (port) apply. */
function writeConfig(): void {
  const conf = [
    "# Written by scripts/stack/engines/postgres.ts at every start; edits are overwritten.",
    `listen_addresses = '${pgHost}'`,
    `port = ${pgPort}`,
    `unix_socket_directories = '${socketDir}'`,
    "max_connections = 200",
    "shared_buffers = '256MB'",
    "effective_cache_size = '1GB'",
    "work_mem = '8MB'",
    "maintenance_work_mem = '64MB'",
    // A payment system: a committed transaction must survive a crash of the server or the machine.
    "fsync = on",
    "synchronous_commit = on",
    "full_page_writes = on",
    // Tables start empty and fill fast: PostgreSQL keeps the plans of prepared statements and of
    // the ledger's PL/pgSQL functions, made for empty tables, until an ANALYZE of those tables.
    // Autovacuum looks at each database this often (default 1 min), so the first ANALYZE comes
    // seconds after a table has grown, not a minute (a sequential scan per step meanwhile).
    "autovacuum_naptime = '5s'",
    "timezone = 'UTC'",
    "log_timezone = 'UTC'",
    "log_line_prefix = '%m [%p] %q%u@%d '",
    "lc_messages = 'C'",
    // Statement statistics for operators and the benchmark's profile (`npm run bench -- --batches N`
    // prints the costliest statements). Loaded at start: a restart of the engine takes it in.
    "shared_preload_libraries = 'pg_stat_statements'",
    "pg_stat_statements.track = 'all'",
    "",
  ].join("\n");
  const file = join(dataDir, "dps.conf");
  writeFileSync(file, conf);
  const main = join(dataDir, "postgresql.conf");
  const text = readFileSync(main, "utf8");
  if (!text.includes("include_if_exists = 'dps.conf'")) {
    writeFileSync(
      main,
      `${text}\n# our settings (port, socket dir, memory, durability)\ninclude_if_exists = 'dps.conf'\n`,
    );
  }
  if (isRoot()) {
    const u = postgresOsUser();
    chownSync(file, u.uid, u.gid);
  }
}

async function initCluster(): Promise<void> {
  if (existsSync(join(dataDir, "PG_VERSION"))) return;
  ensureTraversable(dataDir);
  ownedDir(dataDir, 0o700);
  const t0 = Date.now();
  const [cmd, args] = asPostgres("initdb", [
    "-D",
    dataDir,
    "-U",
    "postgres",
    "--auth-local=trust", // only the socket dir (mode 700, postgres/root only) reaches it
    "--auth-host=scram-sha-256",
    "--encoding=UTF8",
    "--locale=C",
    "--data-checksums", // detect silent corruption of money data
  ]);
  await run(cmd, args, { logFile });
  say("postgres", `initdb ${dataDir} in ${Date.now() - t0} ms`);
}

/** An admin connection over our unix socket as the `postgres` superuser. */
async function admin<T>(fn: (c: pg.Client) => Promise<T>, database = "postgres"): Promise<T> {
  const client = new pg.Client({
    host: socketDir,
    port: pgPort,
    user: "postgres",
    database,
    connectionTimeoutMillis: 3000,
  });
  client.on("error", () => {}); // a server shutting down must not crash us; the query fails instead
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => {});
  }
}

function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

const literal = (text: string): string => `'${text.replaceAll("'", "''")}'`;

/** The stack's superuser and the services' unprivileged roles, with the current passwords. */
async function ensureRoles(): Promise<void> {
  const s = secrets();
  const roles = [
    { name: pgUser, password: pgPassword, options: "LOGIN SUPERUSER" },
    { name: ledgerRole, password: s.LEDGER_DB_PASSWORD, options: unprivileged },
    { name: sagaRole, password: s.SAGA_DB_PASSWORD, options: unprivileged },
  ];
  await admin(async (c) => {
    for (const role of roles) {
      const exists = await c.query("SELECT 1 FROM pg_roles WHERE rolname = $1", [role.name]);
      const verb = exists.rowCount === 0 ? "CREATE" : "ALTER";
      // Passwords cannot be bind parameters in DDL; quote as a literal.
      await c.query(
        `${verb} ROLE ${quoteIdent(role.name)} WITH ${role.options} PASSWORD ${literal(role.password)}`,
      );
    }
  });
}

const unprivileged = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS";

/**
 * Only the owner (and the superusers) may connect: by default every role may connect to every
 * database and create temporary tables there.
 */
async function restrictToOwner(c: pg.Client, name: string): Promise<void> {
  await c.query(`REVOKE ALL ON DATABASE ${quoteIdent(name)} FROM PUBLIC`);
}

/**
 * A database created before the services had roles of their own belongs to the superuser with
 * everything in it: hand the database and its objects to the right owner, once.
 */
async function reown(name: string, from: string, to: string): Promise<void> {
  await admin(async (c) => {
    await c.query(`ALTER DATABASE ${quoteIdent(name)} OWNER TO ${quoteIdent(to)}`);
  });
  await admin((c) => c.query(reownSql(from, to)), name);
  say("postgres", `database ${name} and its objects now belong to ${to}`);
}

function reownSql(from: string, to: string): string {
  return `DO $$
DECLARE
  old oid := (SELECT oid FROM pg_roles WHERE rolname = ${literal(from)});
  r record;
BEGIN
  FOR r IN SELECT n.nspname FROM pg_namespace n
            WHERE n.nspowner = old AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema' LOOP
    EXECUTE format('ALTER SCHEMA %I OWNER TO %I', r.nspname, ${literal(to)});
  END LOOP;
  -- Tables, views and free-standing sequences (a column's sequence follows its table).
  FOR r IN SELECT c.oid::regclass AS rel FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relowner = old AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
              AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
              AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i')
                                AND d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass) LOOP
    EXECUTE format('ALTER TABLE %s OWNER TO %I', r.rel, ${literal(to)});
  END LOOP;
  FOR r IN SELECT p.oid::regprocedure AS fn FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE p.proowner = old AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema' LOOP
    EXECUTE format('ALTER ROUTINE %s OWNER TO %I', r.fn, ${literal(to)});
  END LOOP;
  FOR r IN SELECT t.oid::regtype AS typ FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
             LEFT JOIN pg_class c ON c.oid = t.typrelid
            WHERE t.typowner = old AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
              AND t.typelem = 0 AND (t.typtype IN ('e', 'd', 'r', 'm') OR c.relkind = 'c') LOOP
    EXECUTE format('ALTER TYPE %s OWNER TO %I', r.typ, ${literal(to)});
  END LOOP;
END
$$`;
}

/** Creates the database (owned by its role, see ownerOf) if missing, and gives it that owner. Idempotent. */
export async function ensureDatabase(name: string): Promise<void> {
  const owner = ownerOf(name);
  const current = await admin(async (c) => {
    const found = await c.query<{ owner: string }>(
      "SELECT pg_get_userbyid(datdba) AS owner FROM pg_database WHERE datname = $1",
      [name],
    );
    if (found.rowCount === 0) {
      await c.query(`CREATE DATABASE ${quoteIdent(name)} OWNER ${quoteIdent(owner)}`);
      say("postgres", `created database ${name} (owner ${owner})`);
    }
    await restrictToOwner(c, name);
    return found.rows[0]?.owner ?? owner;
  });
  if (current !== owner) await reown(name, current, owner);
}

/** Drops and recreates a database (test runs start from empty). Kicks out open sessions. */
export async function recreateDatabase(name: string): Promise<void> {
  await admin(async (c) => {
    await c.query(`DROP DATABASE IF EXISTS ${quoteIdent(name)} WITH (FORCE)`);
    await c.query(`CREATE DATABASE ${quoteIdent(name)} OWNER ${quoteIdent(ownerOf(name))}`);
    await restrictToOwner(c, name);
  });
}

/**
 * After a crash (kill9, or every process of the stack killed at once) the data directory's and
 * the socket's lock files name a dead postmaster. PostgreSQL refuses to start while that pid
 * exists: an unreaped zombie, or a pid recycled by any other process (even one it may not signal).
 * A lock is stale unless it names a live process that runs on our data directory.
 */
function removeStaleLocks(): void {
  const socketLock = join(socketDir, `.s.PGSQL.${pgPort}.lock`);
  for (const lock of [join(dataDir, "postmaster.pid"), socketLock]) {
    const pid = readPidFile(lock);
    if (pid !== undefined && isAlive(pid) && cmdline(pid).includes(dataDir)) continue;
    if (existsSync(lock)) say("postgres", `removing the stale lock file ${lock} (pid ${pid ?? "?"} is gone)`);
    rmSync(lock, { force: true });
  }
  // The socket itself is recreated by the postmaster once it holds the lock.
  rmSync(join(socketDir, `.s.PGSQL.${pgPort}`), { force: true });
}

function readPostmasterPid(): number | undefined {
  const file = join(dataDir, "postmaster.pid");
  if (!existsSync(file)) return undefined;
  const pid = Number.parseInt(readFileSync(file, "utf8").split("\n")[0] ?? "", 10);
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

export const postgres: Engine = makeEngine({
  name: "postgres",
  host: pgHost,
  port: pgPort,
  dataDir,
  logFile,
  url: `postgres://${pgUser}:***@${pgHost}:${pgPort}/`,
  cmdlineMarker: dataDir, // `postgres -D <our data dir>`: never the Debian cluster
  startTimeoutMs: 60_000,
  stopTimeoutMs: 60_000,
  install: async () => {
    if (existsSync(join(binDir, "postgres"))) return;
    await aptInstall(["postgresql-15"], join(logsDir, "install-postgres.log"));
  },
  launch: async () => {
    await initCluster();
    removeStaleLocks();
    writeConfig();
    ownedDir(socketDir, 0o700);
    // pg_ctl opens the log file as the postgres user: create it and hand it over first.
    closeSync(openAppend(logFile));
    if (isRoot()) {
      const u = postgresOsUser();
      chownSync(logFile, u.uid, u.gid);
    }
    // pg_ctl detaches the postmaster into its own session (setsid), so Ctrl-C never reaches it.
    const [cmd, args] = asPostgres("pg_ctl", ["-D", dataDir, "-l", logFile, "-w", "-t", "60", "-s", "start"]);
    await run(cmd, args);
  },
  readPid: readPostmasterPid,
  // PostgreSQL owns postmaster.pid and copes with a stale one itself.
  clearPid: () => {},
  // SIGINT is "fast" shutdown (what `pg_ctl stop -m fast` sends): roll back sessions, checkpoint, exit.
  requestStop: async (pid) => signal(pid, "SIGINT"),
  healthy: async () => {
    try {
      await admin((c) => c.query("SELECT 1"));
      return true;
    } catch {
      return false;
    }
  },
  afterStart: ensureRoles,
});
