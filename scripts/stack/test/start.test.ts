/**
 * `npm start` seen from outside, as a user runs it (a stack of its own, see outside.ts), sent
 * SIGINT at several moments; afterwards no process of that stack may be left (pid files, the
 * process table, the ports). Also: a second start is refused while one runs, and unknown flags
 * are refused with the usage. (Killing every process at once is in start.chaos.ts: it takes
 * longer, so `npm run chaos` runs it.)
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { repoRoot } from "../paths.ts";
import { isAlive, readPidFile, waitUntil } from "../proc.ts";
import {
  assertNothingLeft,
  cli,
  command,
  dataDir,
  env,
  killEverything,
  ready,
  type Started,
  stackProcesses,
  start,
} from "./outside.ts";

/**
 * Until the first engine says it started: the Ctrl-C then lands while the others still start
 * (Kafka takes the longest). A fixed wait after the first line could land after all of them on a
 * fast machine (engines up in 1.9 s), and `engines up` then ends on its own, leaving them up.
 */
async function firstEngineStarted(s: Started): Promise<void> {
  await waitUntil(() => /\] started on /.test(s.output()) || s.child.exitCode !== null, 60_000, 10);
  assert.doesNotMatch(s.output(), /engines ready/, "every engine was up before the Ctrl-C could be sent");
}

describe("npm start from outside", { timeout: 900_000 }, () => {
  after(() => killEverything()); // a failed assertion must not leave a stack behind either

  it("refuses unknown flags and words with the usage (exit 2), starting nothing", async () => {
    const commands = [
      ["start", "--copies", "2"],
      ["start", "--replicas", "0"],
      ["start", "--brokers", "three"],
      ["engines", "up", "--replicas", "2"],
      ["engines", "status", "extra", "words"],
      ["engines", "bogus"],
      ["test", "--replicas", "2"],
      ["chaos", "--replicas", "2"],
      ["bench", "--replicas", "2"],
      ["audit", "--replicas", "2"],
      ["dead-letters", "list", "--replicas", "2"],
      ["no-such-command"],
    ];
    const runs = commands.map((args) => ({ args, run: command(...args) }));
    for (const { args, run } of runs) {
      const timer = setTimeout(() => run.child.kill("SIGKILL"), 60_000);
      const code = await run.exited;
      clearTimeout(timer);
      assert.equal(code, 2, `${args.join(" ")}: exit ${code}\n${run.output()}`);
      assert.match(run.output(), /usage: scripts\/run.sh start/, args.join(" "));
    }
    assert.deepEqual(stackProcesses(), []);
  });

  it("a Ctrl-C while the engines are starting stops everything it started", async () => {
    const s = start();
    await firstEngineStarted(s);
    s.child.kill("SIGINT");
    assert.equal(await s.exited, 0, s.output());
    await assertNothingLeft(`SIGINT early\n${s.output()}`);
  });

  it("a Ctrl-C while the services are starting stops everything it started", async () => {
    const s = start();
    await waitUntil(() => s.output().includes("engines ready") || s.child.exitCode !== null, 240_000, 20);
    s.child.kill("SIGINT");
    assert.equal(await s.exited, 0, s.output());
    await assertNothingLeft(`SIGINT while the services start\n${s.output()}`);
  });

  it("a Ctrl-C during `engines up` stops the engines it started", async () => {
    const s = command("engines", "up");
    await firstEngineStarted(s);
    s.child.kill("SIGINT");
    assert.equal(await s.exited, 130, s.output());
    await assertNothingLeft(`SIGINT during engines up\n${s.output()}`);
  });

  it("a Ctrl-C while `npm test` starts its stack stops everything it started", async () => {
    const s = command("test", "--no-lint", "--no-schemathesis", "--only", "least-privilege");
    await firstEngineStarted(s);
    s.child.kill("SIGINT");
    assert.equal(await s.exited, 130, s.output());
    await assertNothingLeft(`SIGINT while npm test starts\n${s.output()}`);
  });

  it("while it runs: a second start and engines down are refused, a killed engine comes back; Ctrl-C stops everything", async () => {
    const s = start();
    await ready(s);
    const second = spawnSync(process.execPath, [cli, "start"], {
      cwd: repoRoot,
      env,
      encoding: "utf8",
      timeout: 60_000,
    });
    assert.equal(second.status, 1, `${second.stdout}${second.stderr}`);
    assert.match(second.stderr, /already running/);
    // Its engine watcher would start them again: `engines down` is refused while it runs.
    const down = await command("engines", "down").exited;
    assert.equal(down, 1);
    assert.equal(s.child.exitCode, null, "the first start must be unharmed");

    // An engine killed with SIGKILL is started again by `npm start` itself.
    const redisPidFile = join(dataDir, "run", "redis.pid");
    const killed = readPidFile(redisPidFile) as number;
    process.kill(killed, "SIGKILL");
    const back = await waitUntil(() => {
      const pid = readPidFile(redisPidFile);
      return pid !== undefined && pid !== killed && isAlive(pid);
    }, 30_000);
    assert.ok(back, `redis was not started again\n${s.output()}`);
    // Ctrl-C pressed again and again while it shuts down must not cut the shutdown short.
    const hammer = setInterval(() => s.child.kill("SIGINT"), 250);
    const t0 = Date.now();
    const code = await s.exited;
    clearInterval(hammer);
    assert.equal(code, 0, `${s.output()}\nshutdown took ${Date.now() - t0} ms`);
    await assertNothingLeft(`SIGINT when running\n${s.output()}`);
  });
});
