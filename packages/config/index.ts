/**
 * Configuration comes only from the environment; each service declares what it reads with a
 * zod schema, so a bad value stops the process at start with a message naming the variable.
 * The defaults point at the engines and ports that `npm start` runs.
 */
import { z } from "zod";

export const env = {
  port: (fallback: number) => z.coerce.number().int().min(0).max(65535).default(fallback),
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
  LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  /**
   * Operator credential (opening balances, deposits, listing users, reading anything, ops routes),
   * sent as `Authorization: Bearer <ADMIN_TOKEN>`. Required where a service accepts it (see
   * packages/http/auth.ts), unless ALLOW_INSECURE_DEV=true.
   */
  ADMIN_TOKEN: env.string(""),
  /** Credential that services present to each other on internal routes. Required likewise. */
  SERVICE_TOKEN: env.string(""),
  /** HMAC key (HS256) of the users' access tokens: user-service signs, transaction-service verifies. */
  AUTH_TOKEN_SECRET: env.string(""),
  /** Lifetime of a user access token, in seconds. */
  AUTH_TOKEN_TTL_S: env.int(900, 30, 86_400),
  /**
   * Local development only: start without the secrets above, using fixed, publicly known values
   * instead (a loud warning is logged). Never set it anywhere reachable by others.
   */
  ALLOW_INSECURE_DEV: env.bool(false),
};

export const engineDefaults = {
  LEDGER_DATABASE_URL: "postgres://dps:dps@127.0.0.1:55432/dps_ledger",
  SAGA_DATABASE_URL: "postgres://dps:dps@127.0.0.1:55432/dps_saga",
  MONGO_URL: "mongodb://127.0.0.1:57017/",
  MONGO_DATABASE: "dps",
  KAFKA_BROKERS: "127.0.0.1:59092",
  REDIS_URL: "redis://127.0.0.1:56379/0",
  USER_SERVICE_URL: "http://127.0.0.1:8000",
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
