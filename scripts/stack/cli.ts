// `node scripts/stack/cli.ts <command>` (normally through scripts/run.sh, which ensures Node 24 and
// node_modules). Commands:
//   start [--stop-engines] [--prometheus] [--brokers N] [--replicas N]
//                              engines (Kafka as N brokers) + the services (N copies each behind
//                              HAProxy) under the supervisor, until Ctrl-C; --prometheus starts a
//                              Prometheus scraping them too
//   engines up|down|status     the engines only
//   engines restart|kill9 <name>
//   test [--no-lint] [--keep-test-data] [--no-schemathesis] [--only <path text>]...
//                              lint, schemathesis, unit + integration tests against a test stack
//   chaos [--transfers N] [--faults N] ... the bank workload under faults, on a fresh test stack
//   bench [--quick] [--profile] [--cluster] ...  throughput and latency against a pgbench baseline (ops/bench)
//   audit [--quiet]            the money guarantees, checked against the running engines
//   dead-letters list|replay <id>|replay --all
import { type ChildProcess, spawn } from "node:child_process";
import { appendFileSync, closeSync, existsSync, globSync, openSync, rmSync } from "node:fs";
import type { Server } from "node:http";
import { join, relative } from "node:path";
import { parseArgs } from "node:util";
import { startOtlpReceiver } from "../../packages/tracing/test/otlp-receiver.ts";
import { balancerSpec, replicas_max } from "./balancer.ts";
import { kafkaBrokerList, kafkaNode } from "./engines/kafka.ts";
import { pgUrl } from "./engines/postgres.ts";
import { deleteKeysWithPrefix } from "./engines/redis.ts";
import { benchOtlpPort, databaseOf, secretNames } from "./env.ts";
import {
  benchEnv,
  createSupervisor,
  deleteTopicsWithPrefix,
  dropMongoDatabase,
  type EngineName,
  type EngineWatcher,
  engineOrder,
  engines,
  ensureEnginesDetailed,
  kafkaEngines,
  pgbenchPath,
  recreateDatabase,
  type StackEnv,
  type Supervisor,
  serviceNames,
  servicePorts,
  setMessageSink,
  stackEnv,
  startControlServer,
  stopEngines,
  testEnv,
  watchEngines,
} from "./index.ts";
import { dataDir, logsDir, repoRoot, runDir, secretsFile } from "./paths.ts";
import { cmdline, isAlive, readPidFile, releasePidLock, secs, takePidLock } from "./proc.ts";
import { startStackPrometheus } from "./prometheus.ts";

/** Repo-relative path for display; absolute when it lies outside the repo (DPS_DATA_DIR elsewhere). */
const rel = (p: string): string => {
  const r = relative(repoRoot, p);
  return r === "" ? "." : r.startsWith("..") ? p : r;
};
const out = (line = ""): void => void process.stdout.write(`${line}\n`);

function pad(rows: string[][]): string[] {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length))) ?? [];
  return rows.map((r) => `  ${r.map((c, i) => c.padEnd(widths[i] ?? 0)).join("  ")}`.trimEnd());
}

async function printEngines(): Promise<boolean> {
  const rows = [["engine", "state", "address", "pid", "data", "log"]];
  let allHealthy = true;
  for (const name of engineOrder) {
    const e = engines[name];
    const healthy = await e.isHealthy();
    allHealthy &&= healthy;
    const pid = e.pid();
    const state = healthy ? "healthy" : pid === undefined ? "stopped" : "UNHEALTHY";
    rows.push([name, state, e.url, String(pid ?? "-"), rel(e.dataDir), rel(e.logFile)]);
  }
  out("Engines");
  for (const line of pad(rows)) out(line);
  return allHealthy;
}

function printServices(sup: Supervisor): void {
  const rows = [["service", "url", "pid", "log"]];
  for (const s of sup.status()) rows.push([s.name, s.url, String(s.pid ?? "-"), rel(s.logFile)]);
  out("Services");
  for (const line of pad(rows)) out(line);
}

/**
 * Resolves on the first SIGINT/SIGTERM/SIGHUP. Under `npm start` a Ctrl-C arrives twice at once
 * (from the terminal, and forwarded by npm). Later signals do not cut the shutdown short: leaving
 * half of the stack running is worse than waiting for its bounded stop timeouts.
 */
function untilSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    let firstAt = 0;
    const handler = (sig: NodeJS.Signals): void => {
      if (firstAt === 0) {
        firstAt = Date.now();
        resolve(sig);
      } else if (Date.now() - firstAt > 2000) {
        out(`\n${sig}: still stopping what this command started (each step is bounded); please wait`);
      }
    };
    for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.on(sig, handler);
  });
}

/** The lock of `npm start` on this data directory: one running stack per checkout. */
const startLockFile = join(runDir, "start.pid");
/** What the command line of the lock's holder contains (a recycled pid does not count). */
const startLockMarker = "cli.ts start";

/** The pid of the running `npm start` on this data directory, if any. */
function startLockHolder(): number | undefined {
  const pid = readPidFile(startLockFile);
  return pid !== undefined && isAlive(pid) && cmdline(pid).includes(startLockMarker) ? pid : undefined;
}

/** `--brokers N` (Kafka as a cluster of N nodes) or `--replicas N` (copies of each service); 1 by default. */
function countFlag(args: string[], flag: string, max: number): number {
  if (!args.includes(flag)) return 1;
  const raw = args[args.indexOf(flag) + 1];
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > max) {
    throw new UsageError(`${flag} must be a whole number from 1 to ${max}, not ${JSON.stringify(raw)}`);
  }
  return n;
}
/** Each node is a JVM of up to 384 MB of heap: a handful fit one development machine. */
const brokers_max = 5;

/** The services' environment with every broker of the cluster in KAFKA_BROKERS. */
function clusterEnv(brokers: number, env: StackEnv = stackEnv()): StackEnv {
  if (brokers > 1 && process.env.KAFKA_BROKERS === undefined) {
    env.KAFKA_BROKERS = kafkaBrokerList(kafkaNode(0, brokers)).join(",");
  }
  return env;
}

async function cmdStart(args: string[]): Promise<number> {
  const brokers = countFlag(args, "--brokers", brokers_max);
  const replicas = countFlag(args, "--replicas", replicas_max);
  const holder = takePidLock(startLockFile, startLockMarker);
  if (holder !== undefined) {
    process.stderr.write(
      `error: \`npm start\` is already running on ${rel(dataDir)} (pid ${holder}); stop it first (Ctrl-C there, or kill ${holder})\n`,
    );
    return 1;
  }
  // Engines that were already up (`npm run stack up`, a running `npm test`) are not ours to stop.
  const before = engineOrder.filter((n) =>
    (n === "kafka" ? kafkaEngines(brokers) : [engines[n]]).some((e) => e.pid() !== undefined),
  );
  // A signal at any moment ends the start-up (every step checks it) and then stops what we started.
  const stopping = new AbortController();
  const sig = untilSignal();
  void sig.then((name) => {
    out(`\n${name}: stopping`);
    stopping.abort(new Error(`interrupted by ${name}`));
  });
  let sup: Supervisor | undefined;
  let watcher: EngineWatcher | undefined;
  let prometheus: Awaited<ReturnType<typeof startStackPrometheus>> | undefined;
  let code = 0;
  try {
    const { env } = await ensureEnginesDetailed({
      signal: stopping.signal,
      brokers,
      env: clusterEnv(brokers),
    });
    watcher = watchEngines({ signal: stopping.signal, brokers });
    const balancer = replicas > 1 ? await balancerSpec(env, serviceNames, replicas) : undefined;
    sup = createSupervisor({ env, skipMissing: true, replicas, balancer });
    await sup.startAll(60_000, stopping.signal);
    if (args.includes("--prometheus")) prometheus = await startStackPrometheus(env);
    out();
    await printEngines();
    printServices(sup);
    if (prometheus !== undefined) out(`Prometheus: ${prometheus.url} (alerts at ${prometheus.url}/alerts)`);
    out(
      `Secrets: ${secretNames.join(", ")} are in ${rel(secretsFile)} (mode 600) unless set in the environment`,
    );
    out("Ctrl-C stops the services, then the engines this command started.");
    out();
    await sig;
  } catch (err) {
    if (!stopping.signal.aborted) {
      process.stderr.write(`error: ${err instanceof Error ? err.message : String(err)}\n`);
      code = 1;
    }
  } finally {
    await prometheus?.stop();
    await watcher?.stop();
    await sup?.stopAll();
    const toStop = args.includes("--stop-engines")
      ? engineOrder
      : engineOrder.filter((n) => !before.includes(n));
    await stopEngines(toStop, brokers);
    const left = engineOrder.filter((n) => !toStop.includes(n));
    if (left.length > 0)
      out(`left running (they were up before): ${left.join(", ")}; \`npm run stack down\` stops them`);
    releasePidLock(startLockFile);
  }
  return code;
}

/**
 * `engines up`: the engines stay running when it is done; interrupted or failed on the way, it
 * stops those it started.
 */
async function enginesUp(): Promise<number> {
  const before = engineOrder.filter((n) => engines[n].pid() !== undefined);
  const stopping = new AbortController();
  void untilSignal().then(() => stopping.abort(new Error("interrupted")));
  try {
    await ensureEnginesDetailed({ signal: stopping.signal });
  } catch (err) {
    await stopEngines(engineOrder.filter((n) => !before.includes(n)));
    if (stopping.signal.aborted) return 130;
    throw err;
  }
  out();
  return (await printEngines()) ? 0 : 1;
}

async function cmdEngines(args: string[]): Promise<number> {
  const [sub, name] = args;
  const pick = (): EngineName => {
    if (name === undefined || !(engineOrder as readonly string[]).includes(name)) {
      throw new UsageError(`engines ${sub}: name one of: ${engineOrder.join(", ")}`);
    }
    return name as EngineName;
  };
  switch (sub) {
    case "up":
      return enginesUp();
    case "down": {
      // Its engine watcher would start them again at once.
      const holder = startLockHolder();
      if (holder !== undefined) {
        process.stderr.write(
          `error: \`npm start\` (pid ${holder}) runs these engines; Ctrl-C it to stop them\n`,
        );
        return 1;
      }
      await stopEngines();
      return 0;
    }
    case "status":
    case undefined:
      return (await printEngines()) ? 0 : 3;
    case "restart":
      await engines[pick()].restart();
      return 0;
    case "kill9":
      await engines[pick()].kill9();
      return 0;
    default:
      throw new UsageError(`unknown: engines ${sub} (up|down|status|restart <name>|kill9 <name>)`);
  }
}

interface Inherited extends Promise<{ code: number }> {
  child: ChildProcess;
}

/** Runs a command with inherited stdio; resolves with its exit code (and exposes the child to kill). */
function runInherit(cmd: string, args: string[], env?: NodeJS.ProcessEnv): Inherited {
  const child = spawn(cmd, args, { cwd: repoRoot, stdio: "inherit", env: env ?? process.env });
  const done = new Promise<{ code: number }>((resolve) => {
    child.on("error", (err) => {
      out(`cannot run ${cmd}: ${err.message}`);
      resolve({ code: 127 });
    });
    child.on("exit", (code, sig) => resolve({ code: code ?? (sig === null ? 1 : 128) }));
  });
  return Object.assign(done, { child });
}

/** Like runInherit, but stdout and stderr go to a file. */
function runToFile(cmd: string, args: string[], env: NodeJS.ProcessEnv, logFile: string): Inherited {
  const fd = openSync(logFile, "w");
  const child = spawn(cmd, args, { cwd: repoRoot, stdio: ["ignore", fd, fd], env });
  const done = new Promise<{ code: number }>((resolve) => {
    child.on("error", (err) => {
      out(`cannot run ${cmd}: ${err.message}`);
      resolve({ code: 127 });
    });
    child.on("exit", (code, sig) => {
      closeSync(fd);
      resolve({ code: code ?? (sig === null ? 1 : 128) });
    });
  });
  return Object.assign(done, { child });
}

async function lint(): Promise<boolean> {
  const bin = (name: string): string => join(repoRoot, "node_modules", ".bin", name);
  const steps: { name: string; config: string[]; cmd: string; args: string[] }[] = [
    { name: "biome check", config: ["biome.json", "biome.jsonc"], cmd: bin("biome"), args: ["check", "."] },
    { name: "tsc --noEmit", config: ["tsconfig.json"], cmd: bin("tsc"), args: ["--noEmit", "-p", "."] },
  ];
  for (const step of steps) {
    if (!step.config.some((f) => existsSync(join(repoRoot, f)))) {
      out(`[test] ${step.name}: skipped (no ${step.config.join(" or ")} yet)`);
      continue;
    }
    const t0 = Date.now();
    const { code } = await runInherit(step.cmd, step.args);
    if (code !== 0) {
      out(`[test] ${step.name} failed (exit ${code}); tests not run`);
      return false;
    }
    out(`[test] ${step.name}: ok (${secs(Date.now() - t0)})`);
  }
  return true;
}

function findTests(patterns: string[]): string[] {
  const files = patterns.flatMap((p) =>
    globSync(p, { cwd: repoRoot, exclude: (f) => f.includes("node_modules") }),
  );
  return [...new Set(files)].sort();
}

/**
 * Test and benchmark runs start from empty databases, topics and keys, so results do not depend
 * on the last run.
 */
async function resetTestData(env: StackEnv, extra_databases: string[] = []): Promise<void> {
  const dbs = [env.LEDGER_DATABASE_URL, env.SAGA_DATABASE_URL]
    .map((u) => databaseOf(u ?? ""))
    .concat(extra_databases);
  await Promise.all([
    ...dbs.map((db) => (db === undefined ? undefined : recreateDatabase(db))),
    dropMongoDatabase(env.MONGO_DATABASE ?? "dps_test"),
    deleteTopicsWithPrefix(env.KAFKA_TOPIC_PREFIX ?? "test."),
    deleteKeysWithPrefix(env.REDIS_KEY_PREFIX ?? "test:"),
  ]);
}

async function cmdTest(args: string[]): Promise<number> {
  if (!args.includes("--no-lint") && !(await lint())) return 1;

  // `--only <text>` (repeatable): just the test files whose path contains one of the texts.
  const only = args.flatMap((arg, i) => (args[i - 1] === "--only" ? [arg] : []));
  const chosen = (files: string[]): string[] =>
    only.length === 0 ? files : files.filter((f) => only.some((text) => f.includes(text)));
  const unit = chosen(
    findTests([
      "services/**/test/**/*.test.ts",
      "packages/**/test/**/*.test.ts",
      "ops/**/test/**/*.test.ts",
      // The deploy files against real validators (installed and cached on first use) and the code.
      "test/deploy/**/*.test.ts",
      "scripts/**/test/**/*.test.ts",
    ]),
  );
  // Fault tests (test/resilience: crash points, chaos) kill services and restart engines; the
  // runner orders files by path, so they run after test/integration.
  const integration = chosen(findTests(["test/integration/**/*.test.ts", "test/resilience/**/*.test.ts"]));
  out(`[test] ${unit.length} unit test file(s), ${integration.length} integration test file(s)`);
  if (unit.length + integration.length === 0) {
    out("[test] no test files found: nothing to run");
    return 0;
  }

  const withSchemathesis = integration.length > 0 && !args.includes("--no-schemathesis");
  return withTestStack(
    { services: integration.length > 0, resetData: !args.includes("--keep-test-data") },
    async (testRunEnv, spawnChild) => {
      // Schemathesis first: it changes data as any client could (it must never run alongside
      // the tests), and its output goes to a file so that node's summary stays the last output.
      let schemathesisCode = 0;
      if (withSchemathesis) {
        const log = join(logsDir, "schemathesis.log");
        const t0 = Date.now();
        const script = join(repoRoot, "scripts", "schemathesis.sh");
        schemathesisCode = (await spawnChild("bash", [script], testRunEnv, log)).code;
        const verdict = schemathesisCode === 0 ? "no failures" : `FAILED (exit ${schemathesisCode})`;
        out(
          `[test] schemathesis on the four OpenAPI documents: ${verdict} in ${secs(Date.now() - t0)}; log ${rel(log)}`,
        );
      }
      // spec reads best in a terminal; tap (node's own default off a terminal) ends with "# pass N" / "# fail N" for CI.
      const reporter = process.env.DPS_TEST_REPORTER || (process.stdout.isTTY ? "spec" : "tap");
      // One runner for unit and integration tests: one summary at the end. Integration tests share
      // one stack, so files run one at a time. A file whose tests are over (passed, failed or
      // timed out) ends even if something it started still runs, so one failure cannot hold the
      // whole run until CI's deadline; test-exit.ts lets its reports reach the runner first.
      const { code } = await spawnChild(
        process.execPath,
        [
          "--test",
          "--test-force-exit",
          "--import",
          join(repoRoot, "scripts", "stack", "test-exit.ts"),
          `--test-reporter=${reporter}`,
          "--test-concurrency=1",
          ...unit,
          ...integration,
        ],
        testRunEnv,
      );
      return code !== 0 ? code : schemathesisCode;
    },
  );
}

/**
 * Bring up the engines (and, if asked, the four services on the test ports with the control
 * server), run one child process against them, tear the test stack down. Only what this call
 * started is stopped afterwards.
 */
type SpawnChild = (cmd: string, args: string[], env: NodeJS.ProcessEnv, logFile?: string) => Inherited;

interface TestStackOptions {
  services: boolean;
  resetData: boolean;
  /** Default: the test stack (testEnv, "test-" log and pid files). */
  env?: StackEnv;
  prefix?: string;
  /** Databases to recreate besides the services' own. */
  extra_databases?: string[];
  node_args?: string[];
  /** The control server through which fault tests kill and restart (default true). */
  control?: boolean;
  /** Kafka nodes and copies of each service behind HAProxy (default 1 and 1), as `npm start` takes them. */
  brokers?: number;
  replicas?: number;
}

async function withTestStack(
  options: TestStackOptions,
  run: (env: NodeJS.ProcessEnv, spawnChild: SpawnChild, sup: Supervisor | undefined) => Promise<number>,
): Promise<number> {
  const prefix = options.prefix ?? "test-";
  // Once the child runs, the stack's own messages go to this file: the output must end with the
  // test runner's summary.
  const stackLog = join(logsDir, `${prefix}stack.log`);
  const toFile = (line: string): void => appendFileSync(stackLog, line);

  const brokers = options.brokers ?? 1;
  const replicas = options.replicas ?? 1;
  const env = clusterEnv(brokers, options.env ?? testEnv());
  const controlPort = Number(process.env.DPS_TEST_CONTROL_PORT || 18099);
  // Engines that were already up are not ours to stop.
  const before = engineOrder.filter((n) =>
    (n === "kafka" ? kafkaEngines(brokers) : [engines[n]]).some((e) => e.pid() !== undefined),
  );
  let sup: Supervisor | undefined;
  let control: Server | undefined;
  let watcher: EngineWatcher | undefined;
  // A signal at any moment, start-up included, stops what this call started.
  const stopping = new AbortController();
  const interrupted = untilSignal().then(() => {
    stopping.abort(new Error("interrupted"));
    return 130;
  });
  const cleanup = async (): Promise<void> => {
    setMessageSink(toFile); // nothing may follow the test runner's summary
    control?.close();
    await watcher?.stop();
    await sup?.stopAll();
    await stopEngines(
      engineOrder.filter((n) => !before.includes(n)),
      brokers,
    );
  };

  try {
    const t0 = Date.now();
    await ensureEnginesDetailed({
      env,
      databases: options.extra_databases,
      signal: stopping.signal,
      brokers,
    });
    // Engines that die while the tests run come back, as under `npm start`.
    watcher = watchEngines({ log: (m) => toFile(`[supervisor] ${m}\n`), brokers });
    if (options.resetData) await resetTestData(env, options.extra_databases);
    if (options.services) {
      stopping.signal.throwIfAborted();
      sup = createSupervisor({
        env,
        prefix,
        skipMissing: true,
        log: (m) => toFile(`[supervisor] ${m}\n`),
        node_args: options.node_args,
        replicas,
        balancer: replicas > 1 ? await balancerSpec(env, serviceNames, replicas) : undefined,
      });
      await sup.startAll(60_000, stopping.signal);
      if (options.control !== false)
        control = await startControlServer({
          supervisor: sup,
          engines,
          watcher,
          token: env.CONTROL_TOKEN ?? "",
          port: controlPort,
        });
    }
    out(stackUpLine(prefix, env, sup !== undefined, Date.now() - t0));
    // From here on the stack's own messages (a chaos test restarting an engine...) go to a file.
    setMessageSink(toFile);
  } catch (err) {
    await cleanup();
    if (stopping.signal.aborted) return 130;
    throw err;
  }

  const childEnv = testChildEnv(env, controlPort);
  // Children run one at a time; on Ctrl-C the current one is stopped.
  let current: ChildProcess | undefined;
  const spawnChild: SpawnChild = (cmd, args, env, logFile) => {
    const child = logFile === undefined ? runInherit(cmd, args, env) : runToFile(cmd, args, env, logFile);
    current = child.child;
    return child;
  };
  const code = await Promise.race([run(childEnv, spawnChild, sup), interrupted]);
  current?.kill("SIGTERM"); // a no-op when it has exited
  await cleanup();
  return code;
}

function stackUpLine(prefix: string, env: StackEnv, services: boolean, took_ms: number): string {
  const ports = serviceNames.map((n) => env[servicePorts[n].env]).join(", ");
  const what = services ? `engines and services (ports ${ports})` : "engines";
  return `[${prefix.replace(/-$/, "")}] stack up in ${secs(took_ms)}: ${what}; logs in ${rel(logsDir)}/`;
}

/** What a test process is told of the stack: the services' public and internal URLs, the engines'. */
function testChildEnv(env: StackEnv, controlPort: number): NodeJS.ProcessEnv {
  const url = (name: keyof typeof servicePorts): string =>
    `http://${env.HOST}:${env[servicePorts[name].env]}`;
  // Internal listeners (ledger steps, audit, /ops/*): loopback, public port + 1000.
  const internalUrl = (name: keyof typeof servicePorts): string =>
    `http://${env.INTERNAL_HOST || "127.0.0.1"}:${env[servicePorts[name].internalEnv]}`;
  return {
    ...process.env,
    ...env,
    TEST_USER_SERVICE_URL: url("user-service"),
    TEST_COMMAND_SERVICE_URL: url("transaction-command-service"),
    TEST_QUERY_SERVICE_URL: url("transaction-query-service"),
    TEST_TRANSACTION_SERVICE_URL: url("transaction-service"),
    TEST_USER_SERVICE_INTERNAL_URL: internalUrl("user-service"),
    TEST_COMMAND_SERVICE_INTERNAL_URL: internalUrl("transaction-command-service"),
    TEST_QUERY_SERVICE_INTERNAL_URL: internalUrl("transaction-query-service"),
    TEST_TRANSACTION_SERVICE_INTERNAL_URL: internalUrl("transaction-service"),
    TEST_STACK_CONTROL_URL: `http://127.0.0.1:${controlPort}`,
    // For tests that talk to the engines directly (data-layer tests, invariant checks).
    TEST_LEDGER_DATABASE_URL: env.LEDGER_DATABASE_URL,
    TEST_SAGA_DATABASE_URL: env.SAGA_DATABASE_URL,
    TEST_MONGO_URL: env.MONGO_URL,
    TEST_MONGO_DATABASE: env.MONGO_DATABASE,
    TEST_KAFKA_BROKERS: env.KAFKA_BROKERS,
    TEST_REDIS_URL: env.REDIS_URL,
  };
}

/** `npm run chaos`: the bank workload under faults against a fresh test stack (the same one `npm test` uses). */
async function cmdChaos(args: string[]): Promise<number> {
  // First `npm start` itself under faults (every process of it killed at once), on a stack of its
  // own: too slow for `npm test`.
  // `--cluster`: only the cluster suites (*.cluster.chaos.ts: three JVM brokers); they are too
  // heavy to run besides the rest on a small machine.
  const cluster = args.includes("--cluster");
  const stackTests = findTests(["scripts/**/test/**/*.chaos.ts"]).filter(
    (f) => f.endsWith(".cluster.chaos.ts") === cluster,
  );
  const reporter = process.env.DPS_TEST_REPORTER || (process.stdout.isTTY ? "spec" : "tap");
  const stackCode =
    stackTests.length === 0
      ? 0
      : (await runInherit(process.execPath, ["--test", `--test-reporter=${reporter}`, ...stackTests])).code;
  if (cluster) return stackCode;
  const code = await withTestStack({ services: true, resetData: true }, async (env, spawnChild) => {
    const { code } = await spawnChild(process.execPath, [join(repoRoot, "ops", "chaos.ts"), ...args], env);
    return code;
  });
  return stackCode !== 0 ? stackCode : code;
}

/**
 * `npm run bench`: engines reused or started, a fresh bench stack (its own ports, databases,
 * topics and keys), then ops/bench/main.ts drives it. `--profile` runs the services under
 * `--cpu-prof`; their profiles are written when they stop, and summarised into the report.
 */
async function cmdBench(args: string[]): Promise<number> {
  if (!args.includes("--cluster")) return benchOn(args);
  if (engines.kafka.pid() !== undefined) {
    // The cluster's first node takes the single broker's port.
    process.stderr.write(
      "error: bench --cluster needs the single Kafka broker stopped (`npm run stack down`)\n",
    );
    return 1;
  }
  // `--cluster`: the same cases on one copy of everything, then on two copies of every service
  // behind HAProxy and three brokers, then the two side by side.
  for (const stack of ["single", "cluster"] as const) {
    const code = await benchOn(
      [...args, "--stack", stack],
      stack === "cluster" ? 3 : 1,
      stack === "cluster" ? 2 : 1,
    );
    if (code !== 0) return code;
  }
  const main = join(repoRoot, "ops", "bench", "main.ts");
  return (await runInherit(process.execPath, [main, ...args, "--phase", "compare"])).code;
}

/** One bench stack (`brokers` Kafka nodes, `replicas` copies of each service), driven and reported. */
async function benchOn(args: string[], brokers = 1, replicas = 1): Promise<number> {
  const profile = args.includes("--profile");
  const profile_dir = join(repoRoot, ".data", "bench", "profiles");
  const node_args = profile
    ? ["--cpu-prof", `--cpu-prof-dir=${profile_dir}`, "--cpu-prof-name={name}.cpuprofile"]
    : [];
  if (profile) rmSync(profile_dir, { recursive: true, force: true });
  const benchArgs = [join(repoRoot, "ops", "bench", "main.ts"), ...args];
  // --tracing: the services export every span to a sink here, which counts and drops them.
  const sink = args.includes("--tracing")
    ? await startOtlpReceiver(benchOtlpPort, { spans_kept_max: 0 })
    : undefined;
  const tracingEnv: Record<string, string> =
    sink === undefined ? {} : { OTEL_EXPORTER_OTLP_ENDPOINT: sink.url };
  let code = await withTestStack(
    {
      services: true,
      resetData: true,
      env: { ...benchEnv(), ...tracingEnv },
      prefix: "bench-",
      control: false,
      extra_databases: ["dps_bench_baseline"],
      node_args,
      brokers,
      replicas,
    },
    async (env, spawnChild, sup) => {
      const pids = Object.fromEntries((sup?.status() ?? []).map((s) => [s.name, s.pid ?? 0]));
      const childEnv = {
        ...env,
        BENCH_SERVICE_PIDS: JSON.stringify(pids),
        BENCH_PGBENCH: pgbenchPath,
        // The stack's superuser, for the server-wide statement statistics of a counted run.
        BENCH_ADMIN_DATABASE_URL: pgUrl("dps_bench_baseline"),
      };
      return (await spawnChild(process.execPath, [...benchArgs, "--phase", "run"], childEnv)).code;
    },
  ).finally(() => sink?.close());
  if (sink !== undefined)
    console.log(`[bench] the OTLP sink received ${sink.received} spans (${sink.refused} exports refused)`);
  // The services have stopped, so their profiles are on disk: the report takes them in.
  if (code === 0) code = (await runInherit(process.execPath, [...benchArgs, "--phase", "report"])).code;
  return code;
}

/** Operator tools run against the stack that `npm start` runs (or whatever the environment points at). */
function cmdOps(script: string, args: string[]): Promise<number> {
  return runInherit(process.execPath, [join(repoRoot, "ops", script), ...args], {
    ...process.env,
    ...stackEnv(),
  }).then((r) => r.code);
}

const usage = [
  "usage: scripts/run.sh start [--stop-engines] [--prometheus] [--brokers N] [--replicas N]",
  "       scripts/run.sh engines up|down|status|restart <name>|kill9 <name>",
  "       scripts/run.sh test [--no-lint] [--keep-test-data] [--no-schemathesis] [--only <path text>]...",
  "       scripts/run.sh chaos [--transfers N] [--faults N] [--wallets N] [--concurrency N]",
  "       scripts/run.sh bench [--smoke|--quick|--long] [--profile] [--tracing] [--cluster] [--count N] [--batches N] [--rate N] [--out DIR]",
  "       scripts/run.sh audit [--quiet]",
  "       scripts/run.sh dead-letters list|replay <id>|replay --all",
];

/** A command line this CLI does not understand: the usage is printed and the exit code is 2. */
class UsageError extends Error {}

type FlagSpec = Record<string, { type: "boolean" | "string"; multiple?: boolean }>;

/**
 * Refuses unknown flags and extra words before anything starts: a typo such as `--replicas 2` must
 * not be silently ignored by a command that then runs with its defaults.
 */
function checkArgs(command: string, args: string[], options: FlagSpec, positionals_max = 0): void {
  let positionals: string[];
  try {
    ({ positionals } = parseArgs({ args, options, allowPositionals: true, strict: true }));
  } catch (err) {
    throw new UsageError(`${command}: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (positionals.length > positionals_max)
    throw new UsageError(`${command}: unexpected argument ${JSON.stringify(positionals[positionals_max])}`);
}

const numberFlag = { type: "string" } as const;

/** What each command accepts; the command itself reads its flags from args. */
const commandArgs: Record<string, (args: string[]) => void> = {
  start: (args) =>
    checkArgs("start", args, {
      "stop-engines": { type: "boolean" },
      prometheus: { type: "boolean" },
      brokers: numberFlag,
      replicas: numberFlag,
    }),
  engines: (args) => checkArgs("engines", args, {}, 2),
  test: (args) =>
    checkArgs("test", args, {
      "no-lint": { type: "boolean" },
      "keep-test-data": { type: "boolean" },
      "no-schemathesis": { type: "boolean" },
      only: { type: "string", multiple: true },
    }),
  chaos: (args) =>
    checkArgs("chaos", args, {
      transfers: numberFlag,
      faults: numberFlag,
      wallets: numberFlag,
      concurrency: numberFlag,
      cluster: { type: "boolean" },
    }),
  bench: (args) =>
    checkArgs("bench", args, {
      smoke: { type: "boolean" },
      quick: { type: "boolean" },
      profile: { type: "boolean" },
      tracing: { type: "boolean" },
      long: { type: "boolean" },
      cluster: { type: "boolean" },
      out: { type: "string" },
      count: { type: "string" },
      batches: { type: "string" },
      rate: { type: "string" },
    }),
  audit: (args) => checkArgs("audit", args, { quiet: { type: "boolean" } }),
  "dead-letters": (args) => checkArgs("dead-letters", args, { all: { type: "boolean" } }, 2),
};

async function main(): Promise<number> {
  const [cmd, ...args] = process.argv.slice(2);
  if (cmd === undefined || cmd === "help" || cmd === "--help") {
    for (const line of usage) out(line);
    return 0;
  }
  try {
    const check = commandArgs[cmd];
    if (check === undefined) throw new UsageError(`unknown command ${JSON.stringify(cmd)}`);
    check(args);
    return await run(cmd, args);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`error: ${err.message}\n`);
    for (const line of usage) process.stderr.write(`${line}\n`);
    return 2;
  }
}

function run(cmd: string, args: string[]): Promise<number> {
  switch (cmd) {
    case "start":
      return cmdStart(args);
    case "engines":
      return cmdEngines(args);
    case "test":
      return cmdTest(args);
    case "chaos":
      return cmdChaos(args);
    case "bench":
      return cmdBench(args);
    case "audit":
      return cmdOps("audit.ts", args);
    default:
      return cmdOps("dead-letters.ts", args);
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`error: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
