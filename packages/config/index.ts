/**
 * Configuration comes only from the environment; each service declares what it reads with a
 * zod schema, so a bad value stops the process at start with a message naming the variable.
 * The defaults point at the engines and ports that `npm start` runs.
 */
import { z } from "zod";
import { tracingEnv } from "#packages/tracing/env.ts";

export const env = {
  port: (fallback: number) => z.coerce.number().int().min(0).max(65535).default(fallback),
  /** A port whose default depends on another variable (an empty value counts as unset). */
  optionalPort: () =>
    z.preprocess((v) => (v === "" ? undefined : v), z.coerce.number().int().min(0).max(65535).optional()),
  int: (fallback: number, min: number, max: number) =>
    z.coerce.number().int().min(min).max(max).default(fallback),
  url: (fallback: string) => z.url().default(fallback),
  string: (fallback: string) => z.string().default(fallback),
  bool: (fallback: boolean) =>
    z
      .enum(["true", "false", "1", "0", ""])
      .default(fallback ? "true" : "false")
      .transform((v) => v === "true" || v === "1"),
};

export const commonEnv = {
  HOST: env.string("127.0.0.1"),
  /**
   * Where the internal listener binds (ledger steps, audit, /ops/*): loopback by default, so
   * only this host's processes reach it. Its port is `<SERVICE>_INTERNAL_PORT` (public + 1000).
   */
  INTERNAL_HOST: env.string("127.0.0.1"),
  LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  /**
   * Operator credential (opening balances, deposits, listing users, locking accounts, reading
   * anything, ops routes), sent as `Authorization: Bearer <ADMIN_TOKEN>`. A service that only
   * checks it may hold ADMIN_TOKEN_SHA256 instead (what the stack hands out). Required where a
   * service accepts it (see packages/http/auth.ts), unless ALLOW_INSECURE_DEV=true.
   */
  ADMIN_TOKEN: env.string(""),
  ADMIN_TOKEN_SHA256: env.string(""),
  /**
   * Local development only: start without the secrets above, using fixed, publicly known values
   * instead (a loud warning is logged); refused unless HOST and INTERNAL_HOST are loopback.
   */
  ALLOW_INSECURE_DEV: env.bool(false),
  /** OTLP/HTTP collector for spans (packages/tracing); unset, tracing is off and costs nothing. */
  ...tracingEnv,
};

/** Per-caller credentials: each service spreads the ones it checks or presents. */
export const credentialEnv = {
  /** transaction-service's credential for the ledger's saga steps (user-service holds the digest). */
  LEDGER_TOKEN: env.string(""),
  LEDGER_TOKEN_SHA256: env.string(""),
  /** transaction-service's credential for transaction-query-service (which holds the digest). */
  QUERY_TOKEN: env.string(""),
  QUERY_TOKEN_SHA256: env.string(""),
  /** HMAC key (HS256) of the users' access tokens: user-service signs, transaction-service verifies. */
  AUTH_TOKEN_SECRET: env.string(""),
  /** Lifetime of a user access token, in seconds. */
  AUTH_TOKEN_TTL_S: env.int(900, 30, 86_400),
  /**
   * How long transaction-service trusts its in-process copy of a user's token version (read from
   * Redis); user-service waits as long before answering a password change or a lock, so that
   * the next request after the answer is refused everywhere. The same value on both.
   */
  TOKEN_VERSION_CACHE_MS: env.int(1_000, 0, 10_000),
  /**
   * How long transaction-service waits for a token version from Redis before it refuses the
   * request (503): a gate, so longer than a cache call's bound (a 100 ms stall of Redis under
   * load refused requests). user-service waits as long again, after TOKEN_VERSION_CACHE_MS,
   * before answering a change, for a read still in flight. The same value on both.
   */
  TOKEN_VERSION_TIMEOUT_MS: env.int(500, 5, 10_000),
};

/**
 * The internal listener's port: `<SERVICE>_INTERNAL_PORT` when set, else the public port + 1000
 * (9000-9003 beside 8000-8003; the test stack's 18000 -> 19000).
 */
export function internalPort(configured: number | undefined, public_port: number): number {
  if (configured !== undefined) return configured;
  const port = public_port + 1000;
  if (public_port === 0) return 0;
  if (port > 65535)
    throw new Error(`no internal port for public port ${public_port}: set the _INTERNAL_PORT`);
  return port;
}

export const engineDefaults = {
  LEDGER_DATABASE_URL: "postgres://dps:dps@127.0.0.1:55432/dps_ledger",
  SAGA_DATABASE_URL: "postgres://dps:dps@127.0.0.1:55432/dps_saga",
  MONGO_URL: "mongodb://127.0.0.1:57017/",
  MONGO_DATABASE: "dps",
  KAFKA_BROKERS: "127.0.0.1:59092",
  REDIS_URL: "redis://127.0.0.1:56379/0",
  USER_SERVICE_URL: "http://127.0.0.1:8000",
  /** user-service's internal listener: the ledger's saga steps. */
  USER_SERVICE_INTERNAL_URL: "http://127.0.0.1:9000",
  TRANSACTION_QUERY_SERVICE_URL: "http://127.0.0.1:8002",
} as const;

export function loadConfig<S extends z.ZodRawShape>(shape: S, source: NodeJS.ProcessEnv = process.env) {
  const parsed = z.object(shape).safeParse(source);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((issue) => `  ${issue.path.join(".")}: ${issue.message}`);
    throw new Error(`invalid configuration:\n${lines.join("\n")}`);
  }
  return parsed.data;
}

export function splitList(value: string): string[] {
  return value
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}
