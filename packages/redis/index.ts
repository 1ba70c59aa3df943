/**
 * Redis plumbing: the services' client. Redis holds caches, rate-limit counts and token versions,
 * none of them the truth about money, so the client never makes a caller wait for it: while Redis
 * is away a command fails at once (no offline queue) and the client reconnects in the background.
 */
import { createClient } from "redis";
import type { Logger } from "#packages/log/index.ts";
import { backoff_ms } from "#packages/runtime/index.ts";

export interface RedisOptions {
  url: string;
  logger: Logger;
  /** Logged (warn) once when the first attempt fails: what the service does without Redis meanwhile. */
  unreachable_message: string;
  /** How long one connection attempt may take. */
  connect_timeout_ms?: number;
}

/** A client connecting in the background; commands sent before it is ready fail, never queue. */
export function openRedis(options: RedisOptions) {
  const { logger } = options;
  const redis = createClient({
    url: options.url,
    disableOfflineQueue: true,
    // No per-command timer from the library: its default (5 s) builds an AbortSignal.timeout per
    // command, whose timer fires 5 s later whatever happened (10-15 µs of CPU a command, about
    // half of one), and it only covers a command not yet written. Every call here is bounded by
    // its caller's own timeout (withTimeout) instead.
    commandOptions: { timeout: 0 },
    socket: {
      connectTimeout: options.connect_timeout_ms ?? 2_000,
      reconnectStrategy: (retries) => backoff_ms(retries, 100, 3_000, { kind: "none" }),
    },
  });
  // Every failed attempt emits 'error' (unhandled, it would end the process). The first one before
  // Redis ever answered is the warning; connect() itself keeps retrying and does not fail then.
  // Later ones are debug: a warn per attempt while Redis is down would flood the log.
  let answered = false;
  let warned = false;
  redis.on("ready", () => {
    answered = true;
  });
  redis.on("error", (error: Error) => {
    if (answered || warned) return void logger.debug({ err: error }, "redis error");
    warned = true;
    logger.warn({ err: error }, options.unreachable_message);
  });
  // It fails only when the client is closed before it could connect (a shutdown).
  redis.connect().catch((error: unknown) => logger.debug({ err: error }, "redis closed before it connected"));
  return redis;
}

export type RedisClient = ReturnType<typeof openRedis>;
