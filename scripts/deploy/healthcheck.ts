/**
 * The image's HEALTHCHECK: GET /health on the running service's own port. One image runs any of
 * the four services, so the service is read from the command line of PID 1 (the entry point
 * execs `node services/<name>/src/main.ts`), and its port from that service's variable, as the
 * service itself reads it. Exits 0 on a 200, 1 otherwise, within timeout_ms.
 */
import { readFileSync } from "node:fs";

const timeout_ms = 3_000;
/** Each service's port variable and default (the stack's servicePorts; a test keeps them equal). */
export const ports: Record<string, { env: string; port: number }> = {
  "user-service": { env: "USER_SERVICE_PORT", port: 8000 },
  "transaction-command-service": { env: "TRANSACTION_COMMAND_SERVICE_PORT", port: 8001 },
  "transaction-query-service": { env: "TRANSACTION_QUERY_SERVICE_PORT", port: 8002 },
  "transaction-service": { env: "TRANSACTION_SERVICE_PORT", port: 8003 },
};

export function runningService(cmdline: string): string | undefined {
  return /services\/([a-z-]+)\/src\/main\.ts/.exec(cmdline)?.[1];
}

async function main(): Promise<number> {
  const service = runningService(readFileSync("/proc/1/cmdline", "utf8").replaceAll("\0", " "));
  const known = service === undefined ? undefined : ports[service];
  if (known === undefined) {
    console.error(`healthcheck: no service found in PID 1's command line`);
    return 1;
  }
  const port = Number(process.env[known.env] || known.port);
  // A service listening on every interface (0.0.0.0) is reached on loopback.
  const host = !process.env.HOST || process.env.HOST === "0.0.0.0" ? "127.0.0.1" : process.env.HOST;
  try {
    const res = await fetch(`http://${host}:${port}/health`, { signal: AbortSignal.timeout(timeout_ms) });
    if (res.ok) return 0;
    console.error(`healthcheck: ${service} /health answered ${res.status}: ${await res.text()}`);
  } catch (error) {
    console.error(`healthcheck: ${service} /health: ${(error as Error).message}`);
  }
  return 1;
}

if (import.meta.main) process.exit(await main());
