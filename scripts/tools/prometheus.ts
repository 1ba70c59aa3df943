// Prometheus and promtool from Debian's `prometheus` package, installed on first use. The package
// would run a system-wide Prometheus on :9090 with its own configuration; the project runs its own
// instance with deploy/prometheus/prometheus.yml, so that service is stopped and disabled.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { backoff_ms } from "#packages/runtime/index.ts";
import { logsDir } from "../stack/paths.ts";
import { isRoot, run, which } from "../stack/proc.ts";

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

function existing(path: string): string | undefined {
  return existsSync(path) ? path : undefined;
}

if (import.meta.main) {
  const tools = await ensurePrometheus();
  console.log(`prometheus: ${tools.prometheus}\npromtool: ${tools.promtool}`);
}
