// What the four engines have in common: a pid we can find again, a health check, a detached
// start that reuses an instance of ours that is already up, and a graceful stop with a SIGKILL
// fallback. Each engine file supplies an EngineSpec; makeEngine() turns it into an Engine.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { logsDir, runDir } from "./paths.ts";
import {
  canBind,
  canConnect,
  cmdline,
  isAlive,
  isRoot,
  killTree,
  pidExists,
  processTree,
  releasePidLock,
  run,
  secs,
  signal,
  tailFile,
  takePidLock,
  waitUntil,
  which,
} from "./proc.ts";

export type EngineName = "postgres" | "redis" | "kafka" | "ferretdb";
/** A node of a Kafka cluster (`kafka-1`, `kafka-2`...), an engine of its own. */
export type KafkaNodeName = `kafka-${number}`;

export interface EngineSpec {
  name: EngineName | KafkaNodeName;
  host: string;
  port: number;
  /** Where its data lives (shown in the status table). */
  dataDir: string;
  /** Its main log file. */
  logFile: string;
  /** How clients reach it (shown in the status table). */
  url: string;
  /** Idempotent: make the binaries available (apt, Maven, Go build...). */
  install(): Promise<void>;
  /** Start the process detached (config, first-time init included). Must make readPid() work. */
  launch(): Promise<void>;
  /** The pid of our running instance, if its pid file says so (liveness is checked by the caller). */
  readPid(): number | undefined;
  /** A fragment of the command line that identifies our process (guards against recycled pids). */
  cmdlineMarker: string;
  /** A real protocol-level check, not just an open port. */
  healthy(): Promise<boolean>;
  /** Graceful stop request; the default is SIGTERM to the main process. */
  requestStop?(pid: number): Promise<void>;
  /** Work after it is healthy (roles, databases). Runs on every start, so it must be idempotent. */
  afterStart?(): Promise<void>;
  /** Forget the pid file after a stop. */
  clearPid(): void;
  startTimeoutMs: number;
  stopTimeoutMs: number;
}

export interface Engine {
  readonly name: EngineName | KafkaNodeName;
  readonly host: string;
  readonly port: number;
  readonly dataDir: string;
  readonly logFile: string;
  readonly url: string;
  install(): Promise<void>;
  /** 'reused' when an instance of ours was already healthy. An abort ends the wait for health. */
  start(signal?: AbortSignal): Promise<"started" | "reused">;
  stop(): Promise<void>;
  restart(): Promise<void>;
  /** SIGKILL the process and all its children, as a crash would (chaos tests). No cleanup, no restart. */
  kill9(): Promise<void>;
  isHealthy(): Promise<boolean>;
  waitHealthy(timeoutMs?: number): Promise<void>;
  /** Pid of our running instance, or undefined. */
  pid(): number | undefined;
}

export function pidFileOf(name: string): string {
  return join(runDir, `${name}.pid`);
}

export function logFileOf(name: string): string {
  return join(logsDir, `${name}.log`);
}

let sink: (line: string) => void = (line) => process.stdout.write(line);

/** Redirects the stack's progress messages (the test command silences them after the test summary). */
export function setMessageSink(fn: (line: string) => void): void {
  sink = fn;
}

/** Prefixes engine messages so interleaved output stays readable. */
export function say(name: string, msg: string): void {
  sink(`[${name}] ${msg}\n`);
}

export function makeEngine(spec: EngineSpec): Engine {
  const stop = () => stopEngine(spec);
  const start = (signal?: AbortSignal) => startEngine(spec, signal);
  return {
    name: spec.name,
    host: spec.host,
    port: spec.port,
    dataDir: spec.dataDir,
    logFile: spec.logFile,
    url: spec.url,
    install: async () => {
      const t0 = Date.now();
      await spec.install();
      const took = Date.now() - t0;
      if (took > 1000) say(spec.name, `installed in ${secs(took)}`);
    },
    start: async (signal) => {
      const how = await start(signal);
      await spec.afterStart?.();
      return how;
    },
    stop,
    restart: async () => {
      await stop();
      await start();
      await spec.afterStart?.();
    },
    kill9: async () => {
      const pid = ourPid(spec);
      if (pid === undefined) return;
      const tree = processTree(pid);
      killTree(pid);
      await waitUntil(() => !tree.some(pidExists), 10_000, 50); // dead and reaped (see stop())
    },
    isHealthy: () => spec.healthy(),
    waitHealthy: (timeoutMs?: number) => waitHealthy(spec, timeoutMs),
    pid: () => ourPid(spec),
  };
}

function ourPid(spec: EngineSpec): number | undefined {
  const pid = spec.readPid();
  if (pid === undefined || !isAlive(pid)) return undefined;
  // A stale pid file can name a recycled pid that now belongs to something else.
  return cmdline(pid).includes(spec.cmdlineMarker) ? pid : undefined;
}

async function waitHealthy(
  spec: EngineSpec,
  timeoutMs = spec.startTimeoutMs,
  signal?: AbortSignal,
): Promise<void> {
  const ok = await waitUntil(async () => {
    signal?.throwIfAborted();
    if (await spec.healthy()) return true;
    // Fail fast when the process we launched has already died.
    const pid = spec.readPid();
    if (pid !== undefined && !isAlive(pid)) {
      throw new Error(
        `${spec.name} exited during start; last lines of ${spec.logFile}:\n${tailFile(spec.logFile)}`,
      );
    }
    return false;
  }, timeoutMs);
  if (!ok) {
    throw new Error(
      `${spec.name} not healthy on ${spec.host}:${spec.port} after ${secs(timeoutMs)}; last lines of ${spec.logFile}:\n${tailFile(spec.logFile)}`,
    );
  }
}

async function stopEngine(spec: EngineSpec): Promise<void> {
  const pid = ourPid(spec);
  if (pid === undefined) {
    spec.clearPid();
    return;
  }
  const t0 = Date.now();
  await (spec.requestStop ? spec.requestStop(pid) : Promise.resolve(signal(pid, "SIGTERM")));
  if (!(await waitUntil(() => !isAlive(pid), spec.stopTimeoutMs, 100))) {
    say(spec.name, `did not stop within ${secs(spec.stopTimeoutMs)}; sending SIGKILL`);
    killTree(pid);
    await waitUntil(() => !isAlive(pid), 5000, 100);
  }
  // Our engines are reaped by init, which can take a moment; until then the pid still exists,
  // and PostgreSQL, for one, refuses to start while its lock file names an existing pid.
  await waitUntil(() => !pidExists(pid), 10_000, 50);
  spec.clearPid();
  say(spec.name, `stopped (${secs(Date.now() - t0)})`);
}

/**
 * Two processes may start the same engine at once (`npm start` and `npm test` sharing engines,
 * or both bringing back one that died): the second waits for the first, then reuses its instance.
 */
async function startEngine(spec: EngineSpec, signal?: AbortSignal): Promise<"started" | "reused"> {
  const startLock = join(runDir, `${spec.name}.starting`);
  const locked = await waitUntil(
    () => {
      signal?.throwIfAborted();
      return takePidLock(startLock, "node") === undefined;
    },
    spec.startTimeoutMs,
    200,
  );
  if (!locked)
    throw new Error(`${spec.name}: another process has been starting it for ${secs(spec.startTimeoutMs)}`);
  try {
    return await startLocked(spec, signal);
  } finally {
    releasePidLock(startLock);
  }
}

async function startLocked(spec: EngineSpec, signal?: AbortSignal): Promise<"started" | "reused"> {
  const t0 = Date.now();
  if (ourPid(spec) !== undefined) {
    // Ours and running: maybe still starting up, so give it the usual time.
    await waitHealthy(spec, spec.startTimeoutMs, signal);
    return "reused";
  }
  spec.clearPid();
  if (await canConnect(spec.host, spec.port)) {
    throw new Error(
      `${spec.host}:${spec.port} is taken by a process that is not our ${spec.name} (no live pid file in ${runDir}). ` +
        "Stop it, or move ours with the DPS_*_PORT variables.",
    );
  }
  if (!(await canBind(spec.host, spec.port))) {
    throw new Error(
      `${spec.host}:${spec.port} cannot be bound although nobody listens there: most likely the local end of ` +
        "an outgoing connection (the port lies in the ephemeral range). It frees when that connection closes; " +
        "or move ours with the DPS_*_PORT variables.",
    );
  }
  mkdirSync(runDir, { recursive: true });
  mkdirSync(logsDir, { recursive: true });
  await spec.launch();
  await waitHealthy(spec, spec.startTimeoutMs, signal);
  say(spec.name, `started on ${spec.host}:${spec.port} in ${secs(Date.now() - t0)}`);
  return "started";
}

let aptUpdated = false;

/** Installs Debian packages (apt-get update once per process). Root, or sudo without a password. */
export async function aptInstall(packages: string[], logFile: string): Promise<void> {
  const sudo = isRoot() ? [] : ["sudo", "-n"];
  if (sudo.length > 0 && which("sudo") === undefined) {
    throw new Error(`need root (or sudo) to apt-get install ${packages.join(" ")}; install them by hand`);
  }
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  const apt = async (...args: string[]): Promise<void> => {
    const [cmd, ...rest] = [...sudo, "apt-get", ...args];
    await run(cmd as string, rest, { env, logFile });
  };
  say("apt", `installing ${packages.join(" ")} (log: ${logFile})`);
  if (!aptUpdated) {
    await apt("update");
    aptUpdated = true;
  }
  await apt("install", "-y", "--no-install-recommends", ...packages);
}
