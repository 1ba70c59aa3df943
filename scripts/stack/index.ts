// Programmatic API of the local stack, for the CLI, the integration tests and the chaos tests.
//
//   const env = await ensureEngines();             // install + start the four engines, make databases
//   const sup = await startServices({ env });       // the four services, healthy
//   sup.kill('transaction-service', 'SIGKILL');     // ...the supervisor restarts it
//   await engines.kafka.restart();
//   await sup.stopAll();
import { type Engine, type EngineName, type KafkaNodeName, say } from "./engine.ts";
import { ferretdb } from "./engines/ferretdb.ts";
import { kafka, kafkaCluster } from "./engines/kafka.ts";
import { ensureDatabase, pgPort, postgres } from "./engines/postgres.ts";
import { redis } from "./engines/redis.ts";
import { databaseOf, type StackEnv, stackEnv, testEnv } from "./env.ts";
import { secs } from "./proc.ts";
import { EngineWatcher } from "./supervisor.ts";

export { startControlServer } from "./control.ts";
export { type Engine, type EngineName, setMessageSink } from "./engine.ts";
export { dropMongoDatabase } from "./engines/ferretdb.ts";
export { deleteTopicsWithPrefix } from "./engines/kafka.ts";
export { ensureDatabase, pgbenchPath, recreateDatabase } from "./engines/postgres.ts";
export {
  benchEnv,
  isServiceName,
  type ServiceName,
  type StackEnv,
  serviceNames,
  servicePorts,
  stackEnv,
  testEnv,
} from "./env.ts";
export {
  createSupervisor,
  EngineWatcher,
  type ServiceSpec,
  type ServiceStatus,
  Supervisor,
  startServices,
} from "./supervisor.ts";

export const engines: Record<EngineName, Engine> = { postgres, redis, kafka, ferretdb };
/** Start order matters only for FerretDB, which stores its data in PostgreSQL. */
export const engineOrder: readonly EngineName[] = ["postgres", "redis", "kafka", "ferretdb"];

export interface EnsureEnginesOptions {
  /** Databases to create besides the ones named in env and the test ones. */
  databases?: string[];
  /** Whose LEDGER/SAGA database URLs name databases to create (default: stackEnv()). */
  env?: StackEnv;
  /** Ends the start-up early (Ctrl-C); the caller then stops what was started. */
  signal?: AbortSignal;
  /** Kafka brokers: 1 (default) is the single broker; more is a cluster (kafkaEngines()). */
  brokers?: number;
}

/** The engines Kafka runs as: the single broker, or every node of a cluster of `brokers`. */
export function kafkaEngines(brokers = 1): Engine[] {
  return brokers === 1 ? [kafka] : kafkaCluster(brokers);
}

export interface EnsureEnginesResult {
  env: StackEnv;
  /** Engines this call started (the others were already running: leave them running when done). */
  started: (EngineName | KafkaNodeName)[];
}

/** The databases every run needs: the app's, the tests', wherever the env points on our server. */
function databasesFor(env: StackEnv, extra: string[]): string[] {
  const names = new Set(["dps_ledger", "dps_saga", "dps_test_ledger", "dps_test_saga", ...extra]);
  for (const url of [
    env.LEDGER_DATABASE_URL,
    env.SAGA_DATABASE_URL,
    testEnv().LEDGER_DATABASE_URL,
    testEnv().SAGA_DATABASE_URL,
  ]) {
    // Only URLs that point at our own server: another server's databases are not ours to create.
    if (url === undefined || !url.includes(`:${pgPort}/`)) continue;
    const db = databaseOf(url);
    if (db !== undefined) names.add(db);
  }
  return [...names];
}

/** Installs what is missing, starts (or reuses) all four engines, creates the databases. */
export async function ensureEnginesDetailed(opts: EnsureEnginesOptions = {}): Promise<EnsureEnginesResult> {
  const env = opts.env ?? stackEnv();
  const t0 = Date.now();
  // Installs in parallel: apt (PostgreSQL, then Redis: one apt lock), Maven, and the Go build.
  await Promise.all([
    (async () => {
      await postgres.install();
      await redis.install();
    })(),
    kafka.install(),
    ferretdb.install(),
  ]);
  const started: (EngineName | KafkaNodeName)[] = [];
  const signal = opts.signal;
  const start = async (e: Engine): Promise<void> => {
    signal?.throwIfAborted();
    if ((await e.start(signal)) === "started") started.push(e.name);
  };
  // Kafka's JVM is the slowest to come up; PostgreSQL then FerretDB run alongside it. Every branch
  // is awaited even when one fails, so that no launch is still under way when the caller cleans up.
  const results = await Promise.allSettled([
    (async () => {
      await start(postgres);
      for (const db of databasesFor(env, opts.databases ?? [])) {
        signal?.throwIfAborted();
        await ensureDatabase(db);
      }
      await start(ferretdb);
    })(),
    start(redis),
    // A cluster's nodes start together: each is healthy only once a quorum of controllers is up.
    (async () => {
      const nodes = await Promise.allSettled(kafkaEngines(opts.brokers).map(start));
      for (const r of nodes) if (r.status === "rejected") throw r.reason;
    })(),
  ]);
  for (const r of results) if (r.status === "rejected") throw r.reason;
  const all = engineOrder.flatMap((n) =>
    n === "kafka" ? kafkaEngines(opts.brokers).map((e) => e.name) : [n],
  );
  const reused = all.filter((n) => !started.includes(n));
  const what = [
    started.length > 0 ? `started ${started.join(", ")}` : "",
    reused.length > 0 ? `reused ${reused.join(", ")}` : "",
  ]
    .filter((s) => s !== "")
    .join("; ");
  say("stack", `engines ready in ${secs(Date.now() - t0)} (${what})`);
  return { env, started };
}

/** Like ensureEnginesDetailed(), returning only the services' environment. */
export async function ensureEngines(opts: EnsureEnginesOptions = {}): Promise<StackEnv> {
  return (await ensureEnginesDetailed(opts)).env;
}

/**
 * Brings back any of the engines that dies (a crash, kill -9) while the returned watcher runs:
 * `npm start` and the test stack supervise their engines as they do their services.
 */
export function watchEngines(
  opts: { signal?: AbortSignal; log?: (msg: string) => void; brokers?: number } = {},
): EngineWatcher {
  return new EngineWatcher(
    engineOrder.flatMap((n) => (n === "kafka" ? kafkaEngines(opts.brokers) : [engines[n]])),
    opts,
  );
}

/** Stops the named engines (default: all), FerretDB before the PostgreSQL it stands on. */
export async function stopEngines(names: readonly EngineName[] = engineOrder, brokers = 1): Promise<void> {
  const reversed = [...engineOrder].reverse().filter((n) => names.includes(n));
  // FerretDB first; then the rest in parallel.
  if (reversed.includes("ferretdb")) await ferretdb.stop();
  await Promise.all(
    reversed
      .filter((n) => n !== "ferretdb")
      .flatMap((n) => (n === "kafka" ? kafkaEngines(brokers) : [engines[n]]))
      .map((e) => e.stop()),
  );
}
