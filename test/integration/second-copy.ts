/**
 * A second copy of transaction-service beside the stack's: the same environment (as the stack
 * hands it to the service), on the test port + 10 (its internal listener + 1000), with overrides.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { openSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { logsDir, repoRoot } from "../../scripts/stack/paths.ts";
import { call, urls } from "./api.ts";

export interface SecondCopy {
  base: string;
  child: ChildProcess;
  stop(): Promise<void>;
}

export async function healthy(base: string, timeout_ms = 90_000): Promise<void> {
  const deadline = Date.now() + timeout_ms;
  for (;;) {
    const answer = await call("GET", `${base}/health`).catch(() => null);
    if (answer?.status === 200) return;
    if (Date.now() > deadline) assert.fail(`${base} not healthy after ${timeout_ms} ms`);
    await sleep(250);
  }
}

/**
 * The environment of another copy of transaction-service beside the stack's, on the stack's port
 * + `offset` (its internal listener 1,000 above): the stack's copy is +0, the second copy +10, the
 * in-process app of transaction-app.test +20, the one of disbursement-items.test +30.
 */
export async function copyEnv(
  offset: number,
  overrides: Record<string, string> = {},
): Promise<{ port: number; env: Record<string, string> }> {
  const { serviceEnv } = await import("../../scripts/stack/env.ts");
  const port = Number(new URL(urls.transaction).port) + offset;
  const env = {
    ...serviceEnv("transaction-service", process.env as Record<string, string>),
    TRANSACTION_SERVICE_PORT: String(port),
    TRANSACTION_SERVICE_INTERNAL_PORT: String(port + 1_000),
    ...overrides,
  };
  return { port, env };
}

export async function startSecondCopy(overrides: Record<string, string> = {}): Promise<SecondCopy> {
  const { port, env } = await copyEnv(10, overrides);
  const log = openSync(join(logsDir, "transaction-service-second-copy.log"), "a");
  const child = spawn(process.execPath, [join(repoRoot, "services/transaction-service/src/main.ts")], {
    cwd: repoRoot,
    env,
    stdio: ["ignore", log, log],
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const base = `http://127.0.0.1:${port}`;
  await healthy(base);
  return {
    base,
    child,
    async stop() {
      child.kill("SIGTERM");
      await Promise.race([exited, sleep(15_000)]);
      child.kill("SIGKILL");
    },
  };
}
