// Prometheus and promtool from Debian's `prometheus` package, installed on first use. The package
// would run a system-wide Prometheus on :9090 with its own configuration; the project runs its own
// instance with deploy/prometheus/prometheus.yml, so that service is stopped and disabled.
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, existsSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { backoff_ms } from "#packages/runtime/index.ts";
import { logsDir } from "../stack/paths.ts";
import { isRoot, openAppend, run, waitUntil, which } from "../stack/proc.ts";

export interface PrometheusTools {
  prometheus: string;
  promtool: string;
}

const PACKAGE = "prometheus";
/** How long one apt-get waits for the dpkg lock that a parallel install may hold. */
const LOCK_WAIT_S = 300;
/** apt-get attempts before giving up: the lock of the package lists has no wait option. */
const ATTEMPTS_MAX = 6;

let installing: Promise<PrometheusTools> | undefined;

/** The installed binaries, or undefined when either is missing. */
export function findPrometheus(): PrometheusTools | undefined {
  const prometheus = which("prometheus") ?? existing("/usr/bin/prometheus");
  const promtool = which("promtool") ?? existing("/usr/bin/promtool");
  return prometheus === undefined || promtool === undefined ? undefined : { prometheus, promtool };
}

/**
 * Idempotent: the paths of prometheus and promtool, installing the Debian package first when they
 * are missing. Concurrent callers in one process share one install.
 */
export function ensurePrometheus(
  logFile = join(logsDir, "install-prometheus.log"),
): Promise<PrometheusTools> {
  const found = findPrometheus();
  if (found !== undefined) return Promise.resolve(found);
  installing ??= install(logFile).finally(() => {
    installing = undefined;
  });
  return installing;
}

async function install(logFile: string): Promise<PrometheusTools> {
  if (!isRoot() && which("sudo") === undefined) {
    throw new Error(`need root (or sudo) to apt-get install ${PACKAGE}; install it by hand`);
  }
  // Only refresh the package lists when apt does not know the package: an update takes long and
  // holds the lists lock against everyone else.
  if (!(await aptKnows(PACKAGE))) await apt(logFile, "update");
  await apt(logFile, "install", "-y", "--no-install-recommends", PACKAGE);
  await stopSystemService(logFile);
  const tools = findPrometheus();
  if (tools === undefined)
    throw new Error(`apt-get installed ${PACKAGE} but prometheus/promtool are missing`);
  return tools;
}

async function aptKnows(name: string): Promise<boolean> {
  const policy = await run("apt-cache", ["policy", name], { allowFailure: true });
  return /Candidate: (?!\(none\))\S+/.test(policy.stdout);
}

/** apt-get as root, retried with backoff while another install holds a lock. */
async function apt(logFile: string, ...args: string[]): Promise<void> {
  const sudo = isRoot() ? [] : ["sudo", "-n"];
  const [cmd, ...rest] = [...sudo, "apt-get", "-o", `DPkg::Lock::Timeout=${LOCK_WAIT_S}`, ...args];
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  for (let attempt = 0; ; attempt++) {
    try {
      await run(cmd as string, rest, { env, logFile });
      return;
    } catch (error) {
      const locked = /Could not get lock|Unable to lock|is another process using it/i.test(
        (error as Error).message,
      );
      if (!locked || attempt + 1 >= ATTEMPTS_MAX) throw error;
      await sleep(backoff_ms(attempt, 2_000, 30_000));
    }
  }
}

/** Stop and disable the package's own service, whichever init system started it. */
async function stopSystemService(logFile: string): Promise<void> {
  const quiet = { logFile, allowFailure: true };
  if (existsSync("/run/systemd/system") && which("systemctl") !== undefined) {
    await run("systemctl", ["disable", "--now", PACKAGE], quiet);
    return;
  }
  if (existsSync(`/etc/init.d/${PACKAGE}`)) {
    await run(`/etc/init.d/${PACKAGE}`, ["stop"], quiet);
    if (which("update-rc.d") !== undefined) await run("update-rc.d", [PACKAGE, "disable"], quiet);
  }
}

export interface PrometheusServerOptions {
  config_file: string;
  /** Loopback port of its web API. */
  port: number;
  /** Its TSDB; a fresh directory gives a Prometheus with no history. */
  data_dir: string;
  log_file: string;
  ready_timeout_ms?: number;
}

export interface PromSample {
  metric: Record<string, string>;
  value: number;
}

export interface PrometheusServer {
  url: string;
  pid: number;
  /** An instant query through the HTTP API (/api/v1/query). */
  query(promql: string): Promise<PromSample[]>;
  /** Any GET under /api/v1, as parsed JSON `data`. */
  api<T>(path: string): Promise<T>;
  stop(): Promise<void>;
}

const API_TIMEOUT_MS = 10_000;

/** Start a Prometheus of our own on loopback and wait until it reports ready. */
export async function startPrometheus(options: PrometheusServerOptions): Promise<PrometheusServer> {
  const tools = await ensurePrometheus();
  const url = `http://127.0.0.1:${options.port}`;
  const child = spawnLogged(tools.prometheus, options.log_file, [
    `--config.file=${options.config_file}`,
    `--storage.tsdb.path=${options.data_dir}`,
    `--web.listen-address=127.0.0.1:${options.port}`,
  ]);
  const server = prometheusServer(url, child);
  const ready = await waitUntil(async () => {
    if (child.exitCode !== null)
      throw new Error(`prometheus exited (${child.exitCode}); see ${options.log_file}`);
    return (
      (await fetch(`${url}/-/ready`, { signal: AbortSignal.timeout(1_000) }).catch(() => undefined))?.ok ===
      true
    );
  }, options.ready_timeout_ms ?? 30_000);
  if (!ready) {
    await server.stop();
    throw new Error(`prometheus not ready on ${url}; see ${options.log_file}`);
  }
  return server;
}

function spawnLogged(cmd: string, log_file: string, args: string[]): ChildProcess & { pid: number } {
  const fd = openAppend(log_file);
  try {
    const child = spawn(cmd, args, { stdio: ["ignore", fd, fd] });
    if (child.pid === undefined) throw new Error(`cannot start ${cmd}`);
    return child as ChildProcess & { pid: number };
  } finally {
    closeSync(fd);
  }
}

function prometheusServer(url: string, child: ChildProcess & { pid: number }): PrometheusServer {
  const api = async <T>(path: string): Promise<T> => {
    const response = await fetch(`${url}/api/v1/${path}`, { signal: AbortSignal.timeout(API_TIMEOUT_MS) });
    const body = (await response.json()) as { status: string; data: T; error?: string };
    if (body.status !== "success") throw new Error(`prometheus ${path}: ${body.error ?? response.status}`);
    return body.data;
  };
  return {
    url,
    pid: child.pid,
    api,
    query: async (promql) => {
      const data = await api<{ result: Array<{ metric: Record<string, string>; value: [number, string] }> }>(
        `query?query=${encodeURIComponent(promql)}`,
      );
      return data.result.map((r) => ({ metric: r.metric, value: Number(r.value[1]) }));
    },
    stop: () => stopChild(child),
  };
}

/** SIGTERM (Prometheus flushes its head block), SIGKILL if it has not exited within 10 s. */
async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
  await exited;
  clearTimeout(timer);
}

function existing(path: string): string | undefined {
  return existsSync(path) ? path : undefined;
}

if (import.meta.main) {
  const tools = await ensurePrometheus();
  console.log(`prometheus: ${tools.prometheus}\npromtool: ${tools.promtool}`);
}
