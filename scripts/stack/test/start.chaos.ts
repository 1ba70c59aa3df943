/**
 * Every process of a running `npm start` killed at once (the command, its services and its
 * engines, as on a power loss), with the dead postmaster's pid taken by another process meanwhile:
 * the next `npm start` must come up from what is on disk. Run by `npm run chaos` (a minute or two:
 * two full starts of a stack of its own, see outside.ts).
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { waitUntil } from "../proc.ts";
import { assertNothingLeft, dataDir, env, killEverything, ready, stackProcesses, start } from "./outside.ts";

/**
 * Points PostgreSQL's lock files at a live process that is not PostgreSQL, as when the dead
 * postmaster's pid is recycled (another cluster's backend, say), or lingers as an unreaped zombie.
 */
function recycleLockPids(pid: number): void {
  const dataLock = join(dataDir, "postgres", "postmaster.pid");
  // postmaster.pid: pid, data directory, start time, port, socket directory, ...
  const socketDir = readFileSync(dataLock, "utf8").split("\n")[4] ?? "";
  const locks = [dataLock, join(socketDir, `.s.PGSQL.${env.DPS_PG_PORT}.lock`)];
  for (const lock of locks) {
    const [, ...rest] = readFileSync(lock, "utf8").split("\n");
    writeFileSync(lock, [String(pid), ...rest].join("\n"));
  }
}

/** uid and gid of the postgres OS user when we are root (PostgreSQL then runs as that user). */
function postgresIds(): { uid?: number; gid?: number } {
  if (process.getuid?.() !== 0) return {};
  for (const line of readFileSync("/etc/passwd", "utf8").split("\n")) {
    const [name, , uid, gid] = line.split(":");
    if (name === "postgres") return { uid: Number(uid), gid: Number(gid) };
  }
  return {};
}

describe("npm start after a crash of everything", { timeout: 900_000 }, () => {
  const bystanders: ChildProcess[] = [];
  after(() => {
    killEverything();
    for (const b of bystanders) b.kill("SIGKILL");
  });

  it("after every process of the stack is killed at once, the next start comes up", async () => {
    const s = start();
    await ready(s);
    killEverything(); // the command, its services and its engines, as on a power loss
    await s.exited;
    await waitUntil(() => stackProcesses().length === 0, 10_000, 100);
    // PostgreSQL takes a pid it may not signal for a stale lock, so the bystander runs as the
    // user PostgreSQL runs as: the postgres OS user when we are root.
    const bystander = spawn("sleep", ["600"], { stdio: "ignore", ...postgresIds() });
    bystanders.push(bystander);
    recycleLockPids(bystander.pid as number);
    const again = start();
    await ready(again);
    again.child.kill("SIGTERM");
    assert.equal(await again.exited, 0, again.output());
    await assertNothingLeft(`restart after kill -9 of everything\n${again.output()}`);
  });
});
