// Small process helpers shared by the engines and the supervisor.
import { spawn } from "node:child_process";
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { connect, createServer } from "node:net";
import { dirname } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Append the command's output to this file instead of capturing it only in memory. */
  logFile?: string;
  /** Resolve with the result instead of throwing on a non-zero exit. */
  allowFailure?: boolean;
}

export interface RunResult {
  code: number;
  stdout: string;
  output: string; // stdout + stderr interleaved
}

/** Runs a command to completion. On failure the error carries the tail of its output. */
export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    const chunks: Buffer[] = [];
    const outChunks: Buffer[] = [];
    const fd = opts.logFile === undefined ? undefined : openAppend(opts.logFile);
    const onData = (b: Buffer): void => {
      chunks.push(b);
      if (fd !== undefined) writeFileSync(fd, b);
    };
    child.stdout.on("data", (b: Buffer) => {
      outChunks.push(b);
      onData(b);
    });
    child.stderr.on("data", onData);
    child.on("error", (err) => {
      if (fd !== undefined) closeSync(fd);
      reject(new Error(`cannot run ${cmd}: ${err.message}`));
    });
    child.on("close", (code, signal) => {
      if (fd !== undefined) closeSync(fd);
      const output = Buffer.concat(chunks).toString("utf8");
      const rc = code ?? 128;
      if (rc !== 0 && opts.allowFailure !== true) {
        const why = signal === null ? `exit code ${rc}` : `signal ${signal}`;
        reject(new Error(`${cmd} ${args.join(" ")} failed (${why}):\n${tail(output, 30)}`));
        return;
      }
      resolvePromise({ code: rc, stdout: Buffer.concat(outChunks).toString("utf8"), output });
    });
  });
}

function tail(text: string, lines: number): string {
  return text.trimEnd().split("\n").slice(-lines).join("\n");
}

export function tailFile(file: string, lines = 30): string {
  if (!existsSync(file)) return `(no ${file})`;
  // Log files can be large: read only the last 64 KiB.
  const buf = readFileSync(file);
  return tail(buf.subarray(Math.max(0, buf.length - 65536)).toString("utf8"), lines);
}

export function openAppend(file: string): number {
  mkdirSync(dirname(file), { recursive: true });
  return openSync(file, "a");
}

export interface DetachedOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  logFile: string;
}

/**
 * Starts a long-running process in its own session/process group (detached), with stdout and
 * stderr appended to logFile, and forgets it: it outlives this Node process, and a Ctrl-C in the
 * terminal is not delivered to it (we decide when and how it stops).
 */
export function spawnDetached(cmd: string, args: string[], opts: DetachedOptions): number {
  const fd = openAppend(opts.logFile);
  try {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      detached: true,
      stdio: ["ignore", fd, fd],
    });
    if (child.pid === undefined) throw new Error(`cannot start ${cmd}`);
    child.unref();
    return child.pid;
  } finally {
    closeSync(fd);
  }
}

/**
 * True if a process with this pid runs. A zombie (exited, not yet reaped: our detached engines are
 * reaped by init, which may take a while) counts as gone.
 */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EPERM") return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

/** True until the pid is fully gone (reaped): a zombie still holds its pid, and lock files check pids. */
export function pidExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** The process's command line, or '' when it is gone. Used to tell our pid from a recycled one. */
export function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ");
  } catch {
    return "";
  }
}

/** Sends a signal; ignores "no such process". */
export function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ESRCH") throw err;
  }
}

/** Signals a whole process group (pid is its leader because we spawned it detached). */
export function signalGroup(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(-pid, sig);
  } catch {
    signal(pid, sig); // not a group leader after all
  }
}

/** pid and all its descendants (from /proc), parents first. */
export function processTree(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      // "pid (comm) state ppid ...": comm may contain spaces and parentheses.
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      const list = children.get(ppid) ?? [];
      list.push(Number(entry));
      children.set(ppid, list);
    } catch {
      // exited meanwhile
    }
  }
  const tree = [pid];
  for (let i = 0; i < tree.length; i++) tree.push(...(children.get(tree[i] as number) ?? []));
  return tree;
}

/**
 * SIGKILLs a process and every descendant, as a crash of the whole server would. (A process group
 * is not enough: PostgreSQL puts each backend in a group of its own.)
 */
export function killTree(pid: number): void {
  for (const p of processTree(pid)) signal(p, "SIGKILL");
}

export function readPidFile(file: string): number | undefined {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    return undefined; // none, or removed meanwhile (a supervisor between a child's exit and its restart)
  }
  const pid = Number.parseInt(text.split("\n")[0] ?? "", 10);
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

export function writePidFile(file: string, pid: number): void {
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, `${pid}\n`);
}

export function removeFile(file: string): void {
  rmSync(file, { force: true });
}

/** Polls until check() is true; returns false on timeout. */
export async function waitUntil(
  check: () => Promise<boolean> | boolean,
  timeoutMs: number,
  everyMs = 250,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() >= deadline) return false;
    await sleep(everyMs);
  }
}

/** True if something accepts TCP connections on host:port. */
export function canConnect(host: string, port: number, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolvePromise) => {
    const socket = connect({ host, port });
    const done = (ok: boolean): void => {
      socket.destroy();
      resolvePromise(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
  });
}

/**
 * True if a listener could bind host:port now. A port nobody listens on can still be taken: as the
 * local end of an outgoing connection when it lies in the ephemeral range (Linux: 32768-60999).
 */
export function canBind(host: string, port: number): Promise<boolean> {
  return new Promise((resolvePromise) => {
    const server = createServer();
    server.once("error", () => resolvePromise(false));
    server.listen({ host, port, exclusive: true }, () => server.close(() => resolvePromise(true)));
  });
}

/**
 * Sends raw bytes and resolves with what came back once complete(reply) holds (default: the first
 * chunk, for one-line protocols like Redis PING), or with what came so far on timeout or close.
 */
export function tcpRequest(
  host: string,
  port: number,
  payload: string,
  timeoutMs = 1000,
  complete: (reply: string) => boolean = () => true,
): Promise<string> {
  return new Promise((resolvePromise) => {
    const socket = connect({ host, port });
    let reply = "";
    const done = (): void => {
      socket.destroy();
      resolvePromise(reply);
    };
    socket.setTimeout(timeoutMs, done);
    socket.once("connect", () => socket.write(payload));
    socket.on("data", (b) => {
      reply += b.toString("utf8");
      if (complete(reply)) done();
    });
    socket.once("close", done);
    socket.once("error", done);
  });
}

/** Finds an executable on PATH (or returns the absolute path given if it exists). */
export function which(name: string): string | undefined {
  if (name.includes("/")) return existsSync(name) ? name : undefined;
  for (const dir of (process.env.PATH ?? "").split(":")) {
    if (dir !== "" && existsSync(`${dir}/${name}`)) return `${dir}/${name}`;
  }
  return undefined;
}

export function isRoot(): boolean {
  return process.getuid?.() === 0;
}

/** Milliseconds as "1.2 s". */
export function secs(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

/**
 * Takes a lock file that names this process (created exclusively). Returns undefined once taken,
 * or the pid of the live process that holds it. A lock left by a dead process, or naming a pid
 * that was recycled by a process whose command line lacks marker, is taken over.
 */
export function takePidLock(file: string, marker: string): number | undefined {
  mkdirSync(dirname(file), { recursive: true });
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      writeFileSync(file, `${process.pid}\n`, { flag: "wx" });
      return undefined;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    const holder = readPidFile(file);
    if (holder === process.pid) return undefined;
    if (holder !== undefined && isAlive(holder) && cmdline(holder).includes(marker)) return holder;
    removeFile(file); // stale: its holder died without releasing it
  }
  throw new Error(`cannot take the lock ${file}`);
}

/** Removes a lock taken by takePidLock(), only if this process still holds it. */
export function releasePidLock(file: string): void {
  if (readPidFile(file) === process.pid) removeFile(file);
}
