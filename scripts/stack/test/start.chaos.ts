/**
 * Every process of a running `npm start` killed at once (the command, its services and its
 * engines, as on a power loss) while transfers are in flight, with the dead postmaster's pid taken
 * by another process meanwhile: the next `npm start` must come up from what is on disk, every
 * transfer must end final, the money must add up and the audit must pass. Run by `npm run chaos`
 * (a minute or two: two full starts of a stack of its own, see outside.ts).
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { waitUntil } from "../proc.ts";
import {
  apiOfThisStack,
  assertNothingLeft,
  command,
  dataDir,
  env,
  killEverything,
  ready,
  stackProcesses,
  start,
} from "./outside.ts";

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

  it("after every process is killed at once with transfers in flight, the next start finishes them", async (t) => {
    const s = start();
    await ready(s);
    const api = await apiOfThisStack();
    const opening = 100_000;
    const a = await api.createUser(opening);
    const b = await api.createUser(0);
    const keys = Array.from({ length: 20 }, () => api.uniqueName("power-loss"));
    const send = (key: string) =>
      api.transfer({ source_user_id: a.id, dest_user_id: b.id, amount: 100 }, key, a.token).catch(() => null);
    // The first answers are in; the rest are in flight when everything dies.
    const sent = keys.map(send);
    await Promise.race([
      Promise.any(sent.map(async (p) => (await p)?.status === 201 || Promise.reject())).catch(() => false),
      sleep(10_000),
    ]);
    killEverything(); // the command, its services and its engines, as on a power loss
    await s.exited;
    const answered = (await Promise.all(sent)).filter((answer) => answer?.status === 201).length;
    t.diagnostic(`${answered} of ${keys.length} transfers answered 201 before the crash`);
    await waitUntil(() => stackProcesses().length === 0, 10_000, 100);
    // PostgreSQL takes a pid it may not signal for a stale lock, so the bystander runs as the
    // user PostgreSQL runs as: the postgres OS user when we are root.
    const bystander = spawn("sleep", ["600"], { stdio: "ignore", ...postgresIds() });
    bystanders.push(bystander);
    recycleLockPids(bystander.pid as number);
    const again = start();
    await ready(again);

    // Every transfer ends final: the same key finds the one that was made, or makes it now.
    let completed = 0;
    for (const key of keys) {
      let id: string | undefined;
      const deadline = Date.now() + 120_000;
      while (id === undefined) {
        const answer = await send(key);
        if (answer?.status === 201) id = answer.body.data.transaction.id;
        else if (answer !== null && answer.status < 500 && answer.status !== 409)
          assert.fail(`${key}: ${answer.status} ${JSON.stringify(answer.body)}`);
        else if (Date.now() > deadline) assert.fail(`${key}: never accepted after the restart`);
        else await sleep(500);
      }
      const final = await api.settled(id as string, a.token, 120_000);
      assert.ok(["COMPLETED", "FAILED"].includes(final.status), JSON.stringify(final));
      if (final.status === "COMPLETED") completed += 1;
    }
    t.diagnostic(`${completed} completed, ${keys.length - completed} failed after the restart`);
    assert.equal(await api.balanceOf(b.id), completed * 100);
    assert.equal(await api.balanceOf(a.id), opening - completed * 100);
    const audit = command("audit", "--quiet");
    assert.equal(await audit.exited, 0, audit.output());

    again.child.kill("SIGTERM");
    assert.equal(await again.exited, 0, again.output());
    await assertNothingLeft(`restart after kill -9 of everything\n${again.output()}`);
  });
});
