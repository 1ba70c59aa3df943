// Redis from Debian's redis-server package, our own instance on its own port and data dir. If apt
// started the system one (6379), it is left alone.
import { chmodSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { aptInstall, type Engine, logFileOf, makeEngine, pidFileOf } from "../engine.ts";
import { secrets } from "../env.ts";
import { confDir, envPort, logsDir, dataDir as stackDataDir } from "../paths.ts";
import { readPidFile, removeFile, spawnDetached, tcpRequest, which, writePidFile } from "../proc.ts";

export const redisHost = "127.0.0.1";
export const redisPort = envPort("DPS_REDIS_PORT", 56379);

const dataDir = join(stackDataDir, "redis");
const confFile = join(confDir, "redis.conf");
const pidFile = pidFileOf("redis");
const logFile = logFileOf("redis");

function writeConfig(): void {
  mkdirSync(confDir, { recursive: true });
  mkdirSync(dataDir, { recursive: true });
  writeFileSync(
    confFile,
    [
      "# Written by scripts/stack/engines/redis.ts at every start; edits are overwritten.",
      `bind ${redisHost}`,
      `port ${redisPort}`,
      "protected-mode yes",
      // Every client authenticates (the services inside REDIS_URL): another local user's process
      // must not read or flush the cache and rate limits.
      `requirepass ${redisPassword()}`,
      "daemonize no", // we detach it ourselves and keep its pid
      'logfile ""', // stdout, which we append to .data/logs/redis.log
      `dir ${dataDir}`,
      // Redis is only a cache here, but a restart should not flush it needlessly.
      "appendonly yes",
      "appendfsync everysec",
      "save 3600 1 300 100 60 10000",
      "",
    ].join("\n"),
    { mode: 0o600 }, // it holds the password
  );
  chmodSync(confFile, 0o600);
}

export const redis: Engine = makeEngine({
  name: "redis",
  host: redisHost,
  port: redisPort,
  dataDir,
  logFile,
  url: `redis://:***@${redisHost}:${redisPort}/0`,
  // It rewrites its title to "redis-server 127.0.0.1:<port>", so no path to match; the port tells
  // ours from another checkout's Redis that took over a recycled pid.
  cmdlineMarker: `redis-server ${redisHost}:${redisPort}`,
  startTimeoutMs: 20_000,
  stopTimeoutMs: 20_000,
  install: async () => {
    if (which("redis-server") !== undefined) return;
    await aptInstall(["redis-server"], join(logsDir, "install-redis.log"));
  },
  launch: async () => {
    writeConfig();
    const bin = which("redis-server") ?? "/usr/bin/redis-server";
    writePidFile(pidFile, spawnDetached(bin, [confFile], { logFile, cwd: dataDir }));
  },
  readPid: () => readPidFile(pidFile),
  clearPid: () => removeFile(pidFile),
  // SIGTERM: Redis writes its AOF/RDB and exits.
  healthy: async () => (await redisCommand("PING")).startsWith("+PONG"),
});

/** The password every Redis client presents (REDIS_PASSWORD, generated into .data/secrets.env). */
function redisPassword(): string {
  return secrets().REDIS_PASSWORD;
}

/** The services' REDIS_URL, password included. */
export function redisUrl(password: string): string {
  return `redis://:${encodeURIComponent(password)}@${redisHost}:${redisPort}/0`;
}

const resp = (args: string[]): string =>
  `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join("")}`;

/**
 * One Redis command over RESP after AUTH; resolves with the command's raw reply (one line: enough
 * for PING, DEL counts and errors). Test resets need no client library.
 */
export async function redisCommand(...args: string[]): Promise<string> {
  const payload = resp(["AUTH", redisPassword()]) + resp(args);
  const lines = (reply: string): string[] => reply.split("\r\n");
  const reply = await tcpRequest(redisHost, redisPort, payload, 5000, (r) => lines(r).length >= 3);
  const [auth = "", answer = ""] = lines(reply);
  return auth.startsWith("+OK") ? answer : auth;
}

/** Deletes every key that starts with prefix (test resets). Never with an empty prefix. */
export async function deleteKeysWithPrefix(prefix: string): Promise<void> {
  if (prefix === "") throw new Error("refusing to delete every key");
  // A Lua loop over SCAN would be kinder to a big keyspace; a test keyspace is small.
  const script =
    "local n = 0 for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) n = n + 1 end return n";
  const reply = await redisCommand("EVAL", script, "0", `${prefix.replace(/[*?[\]\\]/g, "\\$&")}*`);
  if (!reply.startsWith(":")) throw new Error(`redis: cannot delete ${prefix}* keys: ${reply.trim()}`);
}
