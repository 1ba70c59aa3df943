// Runs `node scripts/stack/cli.ts` as a user would, on a stack of its own: its own data directory
// (.data/start-test), engine and service ports taken from DPS_TEST_PORT_BASE (+50...+65), so it
// collides neither with `npm start` nor with the test stack. And finds every process of that stack.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { repoRoot } from "../paths.ts";
import { canConnect, cmdline, isAlive, readPidFile, waitUntil } from "../proc.ts";

export const cli = join(repoRoot, "scripts", "stack", "cli.ts");
const base = Number(process.env.DPS_TEST_PORT_BASE || 18000);
export const dataDir = join(repoRoot, ".data", "start-test");
const ports = {
  services: [base + 50, base + 51, base + 52, base + 53],
  engines: [base + 60, base + 61, base + 62, base + 63, base + 64, base + 65],
  /** `npm test`'s own stack: services on +70...+73, its control server on +74. */
  test: [base + 70, base + 71, base + 72, base + 73, base + 74],
};

/** Only what the command needs: nothing of the test stack's environment may leak into it. */
export const env: NodeJS.ProcessEnv = {
  PATH: process.env.PATH,
  HOME: process.env.HOME,
  DPS_CACHE_DIR: process.env.DPS_CACHE_DIR,
  DPS_DATA_DIR: dataDir,
  DPS_PG_PORT: String(ports.engines[0]),
  DPS_REDIS_PORT: String(ports.engines[1]),
  DPS_KAFKA_PORT: String(ports.engines[2]),
  DPS_KAFKA_CONTROLLER_PORT: String(ports.engines[3]),
  DPS_MONGO_PORT: String(ports.engines[4]),
  DPS_FERRETDB_DEBUG_ADDR: `127.0.0.1:${ports.engines[5]}`,
  DPS_KAFKA_HEAP_OPTS: "-Xms128m -Xmx384m",
  DPS_TEST_PORT_BASE: String(ports.test[0]),
  DPS_TEST_CONTROL_PORT: String(ports.test[4]),
  USER_SERVICE_PORT: String(ports.services[0]),
  TRANSACTION_COMMAND_SERVICE_PORT: String(ports.services[1]),
  TRANSACTION_QUERY_SERVICE_PORT: String(ports.services[2]),
  TRANSACTION_SERVICE_PORT: String(ports.services[3]),
  LOG_LEVEL: "warn",
};

export interface Started {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number>;
}

export function start(...args: string[]): Started {
  return command("start", ...args);
}

/** Any command of the CLI, its output collected. */
export function command(...args: string[]): Started {
  const child = spawn(process.execPath, [cli, ...args], { cwd: repoRoot, env });
  let output = "";
  child.stdout?.on("data", (b: Buffer) => {
    output += b.toString("utf8");
  });
  child.stderr?.on("data", (b: Buffer) => {
    output += b.toString("utf8");
  });
  const exited = new Promise<number>((resolve) =>
    child.on("exit", (code, sig) => resolve(code ?? (sig ? 128 : 1))),
  );
  return { child, output: () => output, exited };
}

export async function ready(s: Started, timeout_ms = 240_000): Promise<void> {
  const ok = await waitUntil(
    () => s.output().includes("Ctrl-C stops") || s.child.exitCode !== null,
    timeout_ms,
  );
  assert.ok(ok && s.child.exitCode === null, `start did not come up:\n${s.output()}`);
}

/**
 * Live processes of this stack: those named by its pid files, and everything started with its data
 * directory in its environment or command line (Redis rewrites both, so its pid file names it).
 */
export function stackProcesses(): number[] {
  const found = pidFiles()
    .map((f) => readPidFile(f))
    .filter((pid): pid is number => pid !== undefined && pid !== process.pid && isAlive(pid));
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const environ = readFileSync(`/proc/${entry}/environ`, "utf8");
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, "utf8");
      if (environ.includes(`DPS_DATA_DIR=${dataDir}\0`) || cmdline.includes(dataDir)) {
        if (isAlive(Number(entry)) && !found.includes(Number(entry))) found.push(Number(entry));
      }
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return found;
}

export function pidFiles(): string[] {
  const run = join(dataDir, "run");
  const files = [join(dataDir, "postgres", "postmaster.pid")];
  if (existsSync(run)) files.push(...readdirSync(run, { recursive: true }).map((f) => join(run, String(f))));
  return files.filter((f) => f.endsWith(".pid") && existsSync(f));
}

/** Nothing of the stack is left: no live pid in a pid file, no process, no open port. */
export async function assertNothingLeft(context: string): Promise<void> {
  // Processes stop within their bounded timeouts; give the last ones a moment to be reaped.
  await waitUntil(() => stackProcesses().length === 0, 30_000, 250);
  const left = stackProcesses().map((pid) => `${pid}: ${cmdline(pid)}`);
  assert.deepEqual(left, [], `${context}: processes left`);
  const live = pidFiles().filter((f) => {
    const pid = readPidFile(f);
    return pid !== undefined && isAlive(pid);
  });
  assert.deepEqual(live, [], `${context}: pid files naming live processes`);
  const open = [];
  for (const port of [...ports.services, ...ports.engines, ...ports.test])
    if (await canConnect("127.0.0.1", port, 500)) open.push(port);
  assert.deepEqual(open, [], `${context}: ports still open`);
}

export function killEverything(): void {
  for (const pid of stackProcesses()) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
}

/** The secrets this stack generated (its secrets.env). */
export function secretsOfThisStack(): Record<string, string> {
  const secrets: Record<string, string> = {};
  for (const line of readFileSync(join(dataDir, "secrets.env"), "utf8").split("\n")) {
    const at = line.indexOf("=");
    if (/^[A-Z]/.test(line) && at > 0) secrets[line.slice(0, at)] = line.slice(at + 1);
  }
  return secrets;
}

/** The integration tests' API helpers, pointed at this stack with its generated credentials. */
export async function apiOfThisStack(): Promise<typeof import("../../../test/integration/api.ts")> {
  const secrets = secretsOfThisStack();
  const url = (port: string | undefined): string => `http://127.0.0.1:${port}`;
  Object.assign(process.env, {
    ADMIN_TOKEN: secrets.ADMIN_TOKEN,
    LEDGER_TOKEN: secrets.LEDGER_TOKEN,
    QUERY_TOKEN: secrets.QUERY_TOKEN,
    TEST_USER_SERVICE_URL: url(env.USER_SERVICE_PORT),
    TEST_COMMAND_SERVICE_URL: url(env.TRANSACTION_COMMAND_SERVICE_PORT),
    TEST_QUERY_SERVICE_URL: url(env.TRANSACTION_QUERY_SERVICE_PORT),
    TEST_TRANSACTION_SERVICE_URL: url(env.TRANSACTION_SERVICE_PORT),
  });
  return import("../../../test/integration/api.ts");
}
