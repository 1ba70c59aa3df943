// FerretDB v1.24.2: a MongoDB wire-protocol server storing its data in our PostgreSQL (database
// dps_ferretdb). Built from source fetched through the Go module proxy.
//
// Two traps make the obvious `go install github.com/FerretDB/FerretDB/cmd/ferretdb@v1.24.2` useless:
// - the proxy refuses that module's version list here (403), which `go install pkg@version` asks for;
// - even when built as a dependency, the binary panics at start: FerretDB's build/version package
//   requires a generated build/version/version.txt, which is not in the published module.
// So: download the exact module version, copy its source, write version.txt into the copy, and
// build it from a throwaway module that `replace`s FerretDB with that copy.
import { chmodSync, existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { MongoClient } from "mongodb";
import pg from "pg";
import { type Engine, logFileOf, makeEngine, pidFileOf, say } from "../engine.ts";
import { cacheDir, envPort, logsDir, dataDir as stackDataDir } from "../paths.ts";
import { readPidFile, removeFile, run, spawnDetached, which, writePidFile } from "../proc.ts";
import { ensureDatabase, pgUrl } from "./postgres.ts";

export const ferretVersion = "1.24.2";
export const mongoHost = "127.0.0.1";
export const mongoPort = envPort("DPS_MONGO_PORT", 57017);
/** Its HTTP debug/metrics listener; the default 127.0.0.1:8088 would collide with other things. '-' disables it. */
const debugAddr = process.env.DPS_FERRETDB_DEBUG_ADDR || "127.0.0.1:58088";
/** FerretDB keeps its own PostgreSQL database, apart from the services' ones. */
export const ferretPgDatabase = "dps_ferretdb";

const installDir = join(cacheDir, `ferretdb-${ferretVersion}`);
const binary = join(installDir, "ferretdb");
const dataDir = join(stackDataDir, "ferretdb"); // its state dir (telemetry state, etc.); documents live in PostgreSQL
const pidFile = pidFileOf("ferretdb");
const logFile = logFileOf("ferretdb");
const mongoUrl = `mongodb://${mongoHost}:${mongoPort}/`;

async function installed(): Promise<boolean> {
  if (!existsSync(binary)) return false;
  const res = await run(binary, ["--version"], { allowFailure: true });
  return res.code === 0 && res.output.includes(`v${ferretVersion}`);
}

async function install(): Promise<void> {
  if (await installed()) return;
  if (which("go") === undefined) {
    throw new Error(
      "FerretDB is built from source and needs Go >= 1.24 on PATH (go.dev toolchain; Debian 12 golang is too old)",
    );
  }
  const buildLog = join(logsDir, "install-ferretdb.log");
  say(
    "ferretdb",
    `building FerretDB v${ferretVersion} with Go (a few minutes the first time; log: ${buildLog})`,
  );
  const buildDir = join(installDir, "build");
  rmSync(buildDir, { recursive: true, force: true });
  mkdirSync(buildDir, { recursive: true });
  const module = `github.com/FerretDB/FerretDB@v${ferretVersion}`;

  // An exact version needs no version list, so the proxy serves it.
  const dl = await run("go", ["mod", "download", "-json", module], { cwd: buildDir, logFile: buildLog });
  const srcDir = (JSON.parse(dl.stdout) as { Dir?: string }).Dir;
  if (srcDir === undefined) throw new Error(`go mod download ${module} printed no Dir`);
  // The module cache is read-only: copy it and make the copy writable.
  await run("cp", ["-r", srcDir, join(buildDir, "src")]);
  await run("chmod", ["-R", "u+w", join(buildDir, "src")]);
  writeFileSync(join(buildDir, "src", "build", "version", "version.txt"), `v${ferretVersion}\n`);

  writeFileSync(
    join(buildDir, "go.mod"),
    `module local/ferretdb-build\n\ngo 1.24\n\nrequire github.com/FerretDB/FerretDB v${ferretVersion}\n\nreplace github.com/FerretDB/FerretDB => ./src\n`,
  );
  // Makes `go mod tidy` keep FerretDB's dependencies.
  writeFileSync(
    join(buildDir, "tools.go"),
    '//go:build tools\n\npackage tools\n\nimport _ "github.com/FerretDB/FerretDB/cmd/ferretdb"\n',
  );
  await run("go", ["mod", "tidy"], { cwd: buildDir, logFile: buildLog });
  const tmp = `${binary}.tmp`;
  await run("go", ["build", "-trimpath", "-o", tmp, "github.com/FerretDB/FerretDB/cmd/ferretdb"], {
    cwd: buildDir,
    logFile: buildLog,
  });
  chmodSync(tmp, 0o755);
  renameSync(tmp, binary);
  if (!(await installed()))
    throw new Error(`built ${binary} but \`ferretdb --version\` does not say v${ferretVersion}`);
}

/** listDatabases goes through to PostgreSQL, so this also proves FerretDB's backend works. */
async function healthy(): Promise<boolean> {
  const client = new MongoClient(mongoUrl, {
    serverSelectionTimeoutMS: 2000,
    connectTimeoutMS: 2000,
    // A FerretDB whose backend stalls accepts the command and never answers: unhealthy, not a hang.
    socketTimeoutMS: 5000,
    directConnection: true,
  });
  try {
    await client.db("admin").command({ listDatabases: 1, nameOnly: true });
    return true;
  } catch {
    return false;
  } finally {
    await client.close().catch(() => {});
  }
}

/**
 * FerretDB v1.24 pushes an equality filter down as `_jsonb->$1 @> $2`, which its own unique btree
 * index on (_jsonb->'_id') cannot serve (a btree knows `=`, not `@>`): every findOne, updateOne,
 * replaceOne or deleteOne by _id reads the whole collection, so the record writer's cost grew with
 * the collection. A GIN index (jsonb_path_ops) on the same expression serves `@>`; an event trigger
 * gives one to every collection table FerretDB creates (and the launch to those that exist), and a
second on `disbursement_id`, which serves a batch's items (`find({disbursement_id})`) the same way.
 * `force_custom_plan`: FerretDB's statements name the field as a parameter (`_jsonb->$1`), so a
 * cached generic plan can never use an expression index and would fall back to a sequential scan.
 */
const FERRET_PG_TUNING = `
CREATE OR REPLACE FUNCTION public.dps_ferretdb_id_index(rel regclass) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
  name text;
BEGIN
  SELECT left(c.relname, 40) || '_id_gin_' || c.oid INTO name FROM pg_class c WHERE c.oid = rel;
  EXECUTE format(
    'CREATE INDEX IF NOT EXISTS %I ON %s USING gin ((_jsonb -> %L) jsonb_path_ops) WITH (fastupdate = off)',
    name, rel, '_id');
  SELECT left(c.relname, 40) || '_batch_gin_' || c.oid INTO name FROM pg_class c WHERE c.oid = rel;
  EXECUTE format(
    'CREATE INDEX IF NOT EXISTS %I ON %s USING gin ((_jsonb -> %L) jsonb_path_ops) WITH (fastupdate = off)',
    name, rel, 'disbursement_id');
END
$fn$;

CREATE OR REPLACE FUNCTION public.dps_ferretdb_on_create_table() RETURNS event_trigger
LANGUAGE plpgsql AS $fn$
DECLARE
  rel oid;
BEGIN
  FOR rel IN
    SELECT c.oid FROM pg_event_trigger_ddl_commands() cmd JOIN pg_class c ON c.oid = cmd.objid
     WHERE cmd.object_type = 'table' AND NOT starts_with(c.relname, '_ferretdb_')
       AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = '_jsonb')
  LOOP
    PERFORM public.dps_ferretdb_id_index(rel);
  END LOOP;
END
$fn$;

DROP EVENT TRIGGER IF EXISTS dps_ferretdb_id_index;
CREATE EVENT TRIGGER dps_ferretdb_id_index ON ddl_command_end
  WHEN TAG IN ('CREATE TABLE') EXECUTE FUNCTION public.dps_ferretdb_on_create_table();

SELECT public.dps_ferretdb_id_index(c.oid)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind = 'r' AND NOT starts_with(c.relname, '_ferretdb_')
   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = '_jsonb');
`;

/** Before FerretDB connects: its database's settings apply to new connections only. */
async function tuneFerretPgDatabase(database: string): Promise<void> {
  const client = new pg.Client({ connectionString: pgUrl(database) });
  await client.connect();
  try {
    await client.query(`ALTER DATABASE "${database}" SET plan_cache_mode = force_custom_plan`);
    await client.query(FERRET_PG_TUNING);
  } finally {
    await client.end();
  }
}

/** Drops a MongoDB database (test runs start from empty). */
export async function dropMongoDatabase(name: string): Promise<void> {
  const client = new MongoClient(mongoUrl, { serverSelectionTimeoutMS: 5000, directConnection: true });
  try {
    await client.db(name).dropDatabase();
  } finally {
    await client.close();
  }
}

export const ferretdb: Engine = makeEngine({
  name: "ferretdb",
  host: mongoHost,
  port: mongoPort,
  dataDir,
  logFile,
  url: mongoUrl,
  cmdlineMarker: `--state-dir=${dataDir}`,
  startTimeoutMs: 30_000,
  stopTimeoutMs: 15_000,
  install,
  launch: async () => {
    mkdirSync(dataDir, { recursive: true });
    // Needs PostgreSQL up (ensureEngines starts it first).
    await ensureDatabase(ferretPgDatabase);
    await tuneFerretPgDatabase(ferretPgDatabase);
    const args = [
      "--handler=postgresql",
      `--postgresql-url=${pgUrl(ferretPgDatabase)}`,
      `--listen-addr=${mongoHost}:${mongoPort}`,
      `--debug-addr=${debugAddr}`,
      `--state-dir=${dataDir}`,
      "--telemetry=disable", // otherwise it tries to reach its vendor's server
      `--log-level=${process.env.DPS_FERRETDB_LOG_LEVEL || "warn"}`,
      "--log-format=text",
    ];
    writePidFile(pidFile, spawnDetached(binary, args, { logFile, cwd: dataDir }));
  },
  readPid: () => readPidFile(pidFile),
  clearPid: () => removeFile(pidFile),
  healthy,
});
