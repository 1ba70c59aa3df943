// Runs the services: one child process each, output appended to .data/logs/<name>.log, restarted
// whenever it exits while it is wanted (a crash, kill -9 included), with a capped backoff so a
// service that crashes at start does not spin.
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { copySpecs } from "./balancer.ts";
import type { Engine } from "./engine.ts";
import { type ServiceName, type StackEnv, serviceEnv, servicePorts } from "./env.ts";
import { logsDir, repoRoot, runDir } from "./paths.ts";
import {
  canConnect,
  cmdline,
  isAlive,
  openAppend,
  readPidFile,
  removeFile,
  secs,
  signal,
  signalGroup,
  tailFile,
  waitUntil,
  writePidFile,
} from "./proc.ts";

export interface ServiceSpec {
  name: string;
  host: string;
  port: number;
  cmd: string;
  args: string[];
  /** Extra variables on top of process.env. */
  env: StackEnv;
  /** Variables not to inherit from process.env (another service's credentials, the stack's own). */
  unset?: readonly string[];
}

function childEnv(spec: ServiceSpec): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...spec.env };
  for (const key of spec.unset ?? []) delete env[key];
  return env;
}

export interface SupervisorOptions {
  /** Distinguishes log and pid files of parallel stacks: '' for `npm start`, 'test-' for `npm test`. */
  prefix?: string;
  /** Where the supervisor's own messages go (default: stdout). */
  log?: (msg: string) => void;
}

export interface ServiceStatus {
  name: string;
  url: string;
  pid: number | undefined;
  restarts: number;
  logFile: string;
}

interface Running {
  spec: ServiceSpec;
  logFile: string;
  pidFile: string;
  child: ChildProcess | undefined;
  /** False once stop() was asked for: an exit is then expected, not restarted. */
  wanted: boolean;
  startedAt: number;
  backoffMs: number;
  restarts: number;
  restartTimer: NodeJS.Timeout | undefined;
}

const backoff_min_ms = 250;
const backoff_max_ms = 5000;
/** A service that ran this long before exiting is restarted right away, not with a grown backoff. */
const stableAfterMs = 10_000;
const stopGraceMs = 10_000;

export class Supervisor {
  readonly #services = new Map<string, Running>();
  readonly #log: (msg: string) => void;
  readonly #prefix: string;
  readonly #onExit = (): void => {
    // Last resort if this process dies without stopAll(): do not leave services behind.
    for (const r of this.#services.values())
      if (r.child?.pid !== undefined) signalGroup(r.child.pid, "SIGTERM");
  };

  constructor(specs: ServiceSpec[], opts: SupervisorOptions = {}) {
    this.#prefix = opts.prefix ?? "";
    this.#log = opts.log ?? ((msg) => process.stdout.write(`[supervisor] ${msg}\n`));
    for (const spec of specs) {
      this.#services.set(spec.name, {
        spec,
        logFile: join(logsDir, `${this.#prefix}${spec.name}.log`),
        pidFile: join(runDir, "services", `${this.#prefix}${spec.name}.pid`),
        child: undefined,
        wanted: false,
        startedAt: 0,
        backoffMs: backoff_min_ms,
        restarts: 0,
        restartTimer: undefined,
      });
    }
    process.on("exit", this.#onExit);
  }

  names(): string[] {
    return [...this.#services.keys()];
  }

  #get(name: string): Running {
    const r = this.#services.get(name);
    if (r === undefined) throw new Error(`unknown service ${name} (have: ${this.names().join(", ")})`);
    return r;
  }

  url(name: string): string {
    const { spec } = this.#get(name);
    return `http://${spec.host}:${spec.port}`;
  }

  pid(name: string): number | undefined {
    return this.#get(name).child?.pid;
  }

  /** Kills a leftover copy from a supervisor that died without cleaning up (pid file + command line match). */
  async #killLeftover(r: Running): Promise<void> {
    const pid = readPidFile(r.pidFile);
    if (pid === undefined || !isAlive(pid) || !cmdline(pid).includes(r.spec.args.join(" "))) return;
    this.#log(`${r.spec.name}: stopping a leftover instance (pid ${pid})`);
    signalGroup(pid, "SIGTERM");
    if (!(await waitUntil(() => !isAlive(pid), stopGraceMs, 100))) signalGroup(pid, "SIGKILL");
    await waitUntil(() => !isAlive(pid), 2000, 50);
  }

  #spawn(r: Running): void {
    const { spec } = r;
    const fd = openAppend(r.logFile);
    try {
      writeFileSync(fd, `\n===== ${new Date().toISOString()} supervisor: starting ${spec.name} =====\n`);
      // Own process group (detached): a Ctrl-C in the terminal reaches only us, and we stop the
      // services in order. The handle stays referenced, so we see every exit.
      const child = spawn(spec.cmd, spec.args, {
        cwd: repoRoot,
        env: childEnv(spec),
        detached: true,
        stdio: ["ignore", fd, fd],
      });
      r.child = child;
      r.startedAt = Date.now();
      if (child.pid !== undefined) writePidFile(r.pidFile, child.pid);
      child.on("error", (err) => this.#log(`${spec.name}: cannot start: ${err.message}`));
      child.on("exit", (code, sig) => this.#exited(r, child, code, sig));
    } finally {
      closeSync(fd);
    }
  }

  #exited(r: Running, child: ChildProcess, code: number | null, sig: NodeJS.Signals | null): void {
    if (r.child !== child) return;
    r.child = undefined;
    removeFile(r.pidFile);
    if (!r.wanted) return;
    const upMs = Date.now() - r.startedAt;
    // After a stable run: restart at once. In a fast crash loop: double the wait each time (capped).
    if (upMs >= stableAfterMs) r.backoffMs = backoff_min_ms;
    const delay = r.backoffMs;
    r.backoffMs = Math.min(backoff_max_ms, r.backoffMs * 2);
    const why = sig === null ? `exit code ${code}` : `signal ${sig}`;
    this.#log(`${r.spec.name} exited (${why}) after ${secs(upMs)}; restarting in ${delay} ms`);
    r.restartTimer = setTimeout(() => {
      r.restartTimer = undefined;
      if (r.wanted && r.child === undefined) {
        r.restarts += 1;
        this.#spawn(r);
      }
    }, delay);
  }

  /** Starts one service (does not wait for health). A no-op when it already runs. */
  async start(name: string): Promise<void> {
    const r = this.#get(name);
    r.wanted = true;
    if (r.child !== undefined || r.restartTimer !== undefined) return;
    await this.#killLeftover(r);
    if (await canConnect(r.spec.host, r.spec.port)) {
      r.wanted = false;
      throw new Error(`${name}: port ${r.spec.port} is already in use (another \`npm start\`?)`);
    }
    r.backoffMs = backoff_min_ms;
    this.#spawn(r);
  }

  /** Waits until GET /health answers 200. */
  async waitHealthy(name: string, timeoutMs = 60_000, abort?: AbortSignal): Promise<void> {
    const r = this.#get(name);
    const url = `${this.url(name)}/health`;
    const ok = await waitUntil(async () => {
      abort?.throwIfAborted();
      try {
        const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
        await res.body?.cancel();
        return res.status === 200;
      } catch {
        return false;
      }
    }, timeoutMs);
    if (!ok) {
      throw new Error(
        `${name}: ${url} not 200 after ${secs(timeoutMs)}; last lines of ${r.logFile}:\n${tailFile(r.logFile)}`,
      );
    }
  }

  /** Starts every service, then waits for all of them to be healthy (or for the abort). */
  async startAll(timeoutMs = 60_000, abort?: AbortSignal): Promise<void> {
    for (const name of this.names()) {
      abort?.throwIfAborted();
      await this.start(name);
    }
    await Promise.all(this.names().map((name) => this.waitHealthy(name, timeoutMs, abort)));
  }

  /** Sends a signal, as a crash or an operator would; the supervisor restarts it if it exits. */
  kill(name: string, sig: NodeJS.Signals = "SIGKILL"): number | undefined {
    const pid = this.pid(name);
    if (pid !== undefined) signal(pid, sig);
    return pid;
  }

  /** Stops one service for good (until start()): SIGTERM, then SIGKILL after 10 s. */
  async stop(name: string): Promise<void> {
    const r = this.#get(name);
    r.wanted = false;
    if (r.restartTimer !== undefined) {
      clearTimeout(r.restartTimer);
      r.restartTimer = undefined;
    }
    const child = r.child;
    if (child?.pid === undefined) return;
    const pid = child.pid;
    const gone = new Promise<void>((res) => child.once("exit", () => res()));
    signal(pid, "SIGTERM");
    const timer = setTimeout(() => {
      this.#log(`${name} still running ${secs(stopGraceMs)} after SIGTERM; sending SIGKILL`);
      signalGroup(pid, "SIGKILL");
    }, stopGraceMs);
    await gone;
    clearTimeout(timer);
    // Anything it forked shares its process group; do not leave it behind.
    signalGroup(pid, "SIGKILL");
  }

  async stopAll(): Promise<void> {
    await Promise.all(this.names().map((name) => this.stop(name)));
    process.off("exit", this.#onExit);
  }

  status(): ServiceStatus[] {
    return [...this.#services.values()].map((r) => ({
      name: r.spec.name,
      url: `http://${r.spec.host}:${r.spec.port}`,
      pid: r.child?.pid,
      restarts: r.restarts,
      logFile: r.logFile,
    }));
  }
}

export interface StartServicesOptions {
  env: StackEnv;
  /** Default: all four. */
  services?: ServiceName[];
  prefix?: string;
  log?: (msg: string) => void;
  /** Wait for every /health (default true). */
  wait?: boolean;
  /** Services whose main.ts does not exist yet are skipped with a note instead of failing. */
  skipMissing?: boolean;
  /** Extra Node options before the entry point (the benchmark's `--cpu-prof`). */
  node_args?: string[];
  /** Copies of each service (default 1); more run behind `balancer` (balancer.ts). */
  replicas?: number;
  balancer?: ServiceSpec;
}

export function serviceEntry(name: ServiceName): string {
  return join("services", name, "src", "main.ts");
}

/** Specs for the project's services: `node services/<name>/src/main.ts`, cwd = repo root. */
export function serviceSpecs(
  env: StackEnv,
  names: readonly ServiceName[],
  node_args: readonly string[] = [],
): ServiceSpec[] {
  return names.map((name) => ({
    name,
    host: env.HOST ?? "127.0.0.1",
    port: Number(env[servicePorts[name].env] ?? servicePorts[name].port),
    cmd: process.execPath, // the Node 24 that runs us
    args: [...node_args.map((a) => a.replaceAll("{name}", name)), serviceEntry(name)],
    env: serviceEnv(name, env),
    unset: Object.keys(env).filter((key) => !(key in serviceEnv(name, env))),
  }));
}

/** A supervisor for the project's services, none started yet. */
export function createSupervisor(opts: StartServicesOptions): Supervisor {
  const log = opts.log ?? ((msg: string) => process.stdout.write(`[supervisor] ${msg}\n`));
  let names = opts.services ?? (Object.keys(servicePorts) as ServiceName[]);
  if (opts.skipMissing === true) {
    const missing = names.filter((n) => !existsSync(join(repoRoot, serviceEntry(n))));
    for (const n of missing) log(`${n}: ${serviceEntry(n)} does not exist yet; skipped`);
    names = names.filter((n) => !missing.includes(n));
  }
  const specs = serviceSpecs(opts.env, names, opts.node_args);
  const replicas = opts.replicas ?? 1;
  const all =
    replicas === 1 ? specs : [...copySpecs(specs, replicas), ...(opts.balancer ? [opts.balancer] : [])];
  return new Supervisor(all, { prefix: opts.prefix, log });
}

export async function startServices(opts: StartServicesOptions): Promise<Supervisor> {
  const sup = createSupervisor(opts);
  try {
    if (opts.wait === false) for (const n of sup.names()) await sup.start(n);
    else await sup.startAll();
  } catch (err) {
    await sup.stopAll();
    throw err;
  }
  return sup;
}

const engineCheckIntervalMs = 1000;

/**
 * Restarts an engine whose process is gone (a crash, kill -9) while it is wanted, as the
 * Supervisor does for services: PostgreSQL recovers from its WAL, Kafka from its log, Redis from
 * its AOF, and the services reconnect. A failed start is retried with a capped backoff.
 */
export class EngineWatcher {
  readonly #engines: readonly Engine[];
  readonly #log: (msg: string) => void;
  readonly #paused = new Set<string>();
  readonly #retryAt = new Map<string, { at: number; backoffMs: number }>();
  readonly #timer: NodeJS.Timeout;
  #checking: Promise<void> | undefined;
  readonly #stopping = new AbortController();

  constructor(engines: readonly Engine[], opts: { signal?: AbortSignal; log?: (msg: string) => void } = {}) {
    this.#engines = engines;
    this.#log = opts.log ?? ((msg) => process.stdout.write(`[supervisor] ${msg}\n`));
    this.#timer = setInterval(() => {
      this.#checking ??= this.#check().finally(() => {
        this.#checking = undefined;
      });
    }, engineCheckIntervalMs);
    this.#timer.unref();
    opts.signal?.addEventListener("abort", () => this.stop(), { once: true });
  }

  /** An engine stopped on purpose (the control server's stop) is not brought back until resume(). */
  pause(name: string): void {
    this.#paused.add(name);
  }

  resume(name: string): void {
    this.#paused.delete(name);
  }

  /** Stops watching; waits for a restart under way, so that nothing starts after this returns. */
  async stop(): Promise<void> {
    this.#stopping.abort(new Error("the engine watcher stopped"));
    clearInterval(this.#timer);
    await this.#checking;
  }

  async #check(): Promise<void> {
    for (const e of this.#engines) {
      if (this.#stopping.signal.aborted || this.#paused.has(e.name) || e.pid() !== undefined) continue;
      const retry = this.#retryAt.get(e.name) ?? { at: 0, backoffMs: backoff_min_ms };
      if (Date.now() < retry.at) continue;
      this.#log(`${e.name} is not running; starting it again`);
      try {
        await e.start(this.#stopping.signal);
        this.#retryAt.delete(e.name);
        this.#log(`${e.name} is back`);
      } catch (err) {
        if (this.#stopping.signal.aborted) return;
        const backoffMs = Math.min(backoff_max_ms, retry.backoffMs * 2);
        this.#retryAt.set(e.name, { at: Date.now() + retry.backoffMs, backoffMs });
        this.#log(
          `${e.name} did not start (${err instanceof Error ? err.message : String(err)}); retrying in ${retry.backoffMs} ms`,
        );
      }
    }
  }
}
