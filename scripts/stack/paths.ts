// Where things live. Everything the stack writes at run time goes under .data/ (gitignored) so a
// checkout is self-contained; slow downloads and builds go to a cache dir OUTSIDE the repo so a
// fresh clone on the same machine reuses them.
import { homedir } from "node:os";
import { join, resolve } from "node:path";

export const repoRoot: string = resolve(import.meta.dirname, "..", "..");

export const dataDir: string = process.env.DPS_DATA_DIR || join(repoRoot, ".data");
export const runDir: string = join(dataDir, "run"); // pid files, sockets
export const logsDir: string = join(dataDir, "logs");
export const confDir: string = join(dataDir, "conf"); // generated config files
export const secretsFile: string = join(dataDir, "secrets.env");

export const cacheDir: string =
  process.env.DPS_CACHE_DIR || join(homedir(), ".cache", "distributed-payment-service");

/** Integer from the environment, or the default. Throws on garbage so a typo is not silently ignored. */
export function envPort(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0 || n > 65535) throw new Error(`${name}=${raw} is not a TCP port`);
  return n;
}
