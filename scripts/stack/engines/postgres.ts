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
import { envPort, logsDir, runDir, dataDir as stackDataDir } from "../paths.ts";
import { isAlive, isRoot, openAppend, run, signal } from "../proc.ts";

const binDir = process.env.DPS_PG_BIN_DIR || "/usr/lib/postgresql/15/bin";
/** pgbench ships with the server package; the benchmark's baseline runs it. */
export const pgbenchPath = join(binDir, "pgbench");
export const pgHost = "127.0.0.1";
export const pgPort = envPort("DPS_PG_PORT", 55432);
/** The application role. A superuser is fine on a local dev/test cluster (FerretDB creates schemas). */
export const pgUser = process.env.DPS_PG_USER || "dps";
export const pgPassword = process.env.DPS_PG_PASSWORD || "dps";

const dataDir = join(stackDataDir, "postgres");
const logFile = logFileOf("postgres");

// A unix socket path must fit in 107 bytes; deep checkouts fall back to a short dir in /tmp.
const socketDir = ((): string => {
  const local = join(runDir, "postgres");
  if (`${local}/.s.PGSQL.${pgPort}`.length <= 100) return local;
  return `/tmp/dps-pg-${createHash("sha1").update(stackDataDir).digest("hex").slice(0, 10)}`;
})();

export function pgUrl(database: string): string {
  return `postgres://${encodeURIComponent(pgUser)}:${encodeURIComponent(pgPassword)}@${pgHost}:${pgPort}/${database}`;
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
    "timezone = 'UTC'",
    "log_timezone = 'UTC'",
    "log_line_prefix = '%m [%p] %q%u@%d '",
    "lc_messages = 'C'",
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
async function admin<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({
    host: socketDir,
    port: pgPort,
    user: "postgres",
    database: "postgres",
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

async function ensureRole(): Promise<void> {
  await admin(async (c) => {
    const exists = await c.query("SELECT 1 FROM pg_roles WHERE rolname = $1", [pgUser]);
    const verb = exists.rowCount === 0 ? "CREATE" : "ALTER";
    // Passwords cannot be bind parameters in DDL; quote as a literal.
    const pw = `'${pgPassword.replaceAll("'", "''")}'`;
    await c.query(`${verb} ROLE ${quoteIdent(pgUser)} WITH LOGIN SUPERUSER PASSWORD ${pw}`);
  });
}

/** Creates the database (owned by the app role) if missing. Idempotent. */
export async function ensureDatabase(name: string): Promise<void> {
  await admin(async (c) => {
    const exists = await c.query("SELECT 1 FROM pg_database WHERE datname = $1", [name]);
    if (exists.rowCount === 0) {
      await c.query(`CREATE DATABASE ${quoteIdent(name)} OWNER ${quoteIdent(pgUser)}`);
      say("postgres", `created database ${name}`);
    }
  });
}

/** Drops and recreates a database (test runs start from empty). Kicks out open sessions. */
export async function recreateDatabase(name: string): Promise<void> {
  await admin(async (c) => {
    await c.query(`DROP DATABASE IF EXISTS ${quoteIdent(name)} WITH (FORCE)`);
    await c.query(`CREATE DATABASE ${quoteIdent(name)} OWNER ${quoteIdent(pgUser)}`);
  });
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
    // After a crash (kill9) the lock file names a dead postmaster; if that pid is still an
    // unreaped zombie, PostgreSQL would take it for a live one and refuse to start.
    const lock = join(dataDir, "postmaster.pid");
    const stale = readPostmasterPid();
    if (stale !== undefined && !isAlive(stale)) rmSync(lock, { force: true });
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
  afterStart: ensureRole,
});
