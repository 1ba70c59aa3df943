/**
 * What a service that sends webhooks reads from its environment (to spread into its configShape),
 * and how those values become the dispatcher's options.
 */
import { env } from "#packages/config/index.ts";
import type { Logger } from "#packages/log/index.ts";
import type { Pool } from "#packages/pg/index.ts";
import type { DispatcherOptions, DispatcherSettings } from "./dispatcher.ts";

export const webhookConfigShape = {
  /** Allow webhook URLs on loopback, private and link-local addresses: development and test stacks only. */
  WEBHOOK_ALLOW_PRIVATE: env.bool(false),
  WEBHOOK_ATTEMPT_TIMEOUT_MS: env.int(10_000, 100, 60_000),
  WEBHOOK_RETRY_BASE_MS: env.int(5_000, 10, 3_600_000),
  WEBHOOK_RETRY_CAP_MS: env.int(21_600_000, 10, 86_400_000),
  WEBHOOK_RETRY_WINDOW_MS: env.int(259_200_000, 1_000, 2_592_000_000),
  WEBHOOK_CONCURRENCY_MAX: env.int(128, 1, 1_024),
  /**
   * A payer's burst (a batch's 1,000 events) drains at about this many per exchange time, which
   * on a loaded two-core host is tens of milliseconds: 16 left it seconds behind at the batch
   * peak, 64 within about a second (README, Profile-guided rounds 11). Half of
   * WEBHOOK_CONCURRENCY_MAX: one slow endpoint leaves the other half to the rest.
   */
  WEBHOOK_ENDPOINT_IN_FLIGHT_MAX: env.int(64, 1, 64),
  WEBHOOK_BATCH_MAX: env.int(100, 1, 1_000),
  WEBHOOK_IDLE_POLL_MS: env.int(1_000, 10, 60_000),
  /** How long deliveries enqueued together may gather before they are claimed: fewer, fuller claims. */
  WEBHOOK_GATHER_MS: env.int(50, 0, 1_000),
  /** How long delivered and failed deliveries (and their attempt logs) are kept. */
  WEBHOOK_RETENTION_MS: env.int(2_592_000_000, 60_000, 31_536_000_000),
  /** How long the previous signing secret keeps signing after a rotation. */
  WEBHOOK_SECRET_GRACE_MS: env.int(86_400_000, 0, 604_800_000),
  /** Deliveries on event loops of their own (worker threads); false: on the service's main loop. */
  WEBHOOK_DISPATCHER_THREAD: env.bool(true),
  /**
   * Worker threads delivering, with WEBHOOK_DISPATCHER_THREAD: they share the queue and split
   * WEBHOOK_CONCURRENCY_MAX and WEBHOOK_ENDPOINT_IN_FLIGHT_MAX between them.
   */
  WEBHOOK_DISPATCHER_THREADS: env.int(2, 1, 16),
  /** Connections of each dispatcher thread's own pool: claims, recorded outcomes, pruning. */
  WEBHOOK_DATABASE_POOL_MAX: env.int(4, 2, 64),
};

export interface WebhookConfig {
  WEBHOOK_ALLOW_PRIVATE: boolean;
  WEBHOOK_ATTEMPT_TIMEOUT_MS: number;
  WEBHOOK_RETRY_BASE_MS: number;
  WEBHOOK_RETRY_CAP_MS: number;
  WEBHOOK_RETRY_WINDOW_MS: number;
  WEBHOOK_CONCURRENCY_MAX: number;
  WEBHOOK_ENDPOINT_IN_FLIGHT_MAX: number;
  WEBHOOK_BATCH_MAX: number;
  WEBHOOK_IDLE_POLL_MS: number;
  WEBHOOK_GATHER_MS: number;
  WEBHOOK_RETENTION_MS: number;
}

export function dispatcherOptions(config: WebhookConfig, pool: Pool, logger: Logger): DispatcherOptions {
  return { ...dispatcherSettings(config), pool, logger };
}

/** The options that are plain values: what a dispatcher thread is handed (thread.ts). */
export function dispatcherSettings(config: WebhookConfig): DispatcherSettings {
  return {
    guard: { allow_private: config.WEBHOOK_ALLOW_PRIVATE },
    attempt_timeout_ms: config.WEBHOOK_ATTEMPT_TIMEOUT_MS,
    concurrency_max: config.WEBHOOK_CONCURRENCY_MAX,
    endpoint_in_flight_max: config.WEBHOOK_ENDPOINT_IN_FLIGHT_MAX,
    batch_max: config.WEBHOOK_BATCH_MAX,
    idle_poll_ms: config.WEBHOOK_IDLE_POLL_MS,
    gather_ms: config.WEBHOOK_GATHER_MS,
    // Past the attempt's own timeout, time to record its outcome before another copy may take it.
    lease_ms: config.WEBHOOK_ATTEMPT_TIMEOUT_MS + 30_000,
    retention_ms: config.WEBHOOK_RETENTION_MS,
    retry: {
      base_ms: config.WEBHOOK_RETRY_BASE_MS,
      cap_ms: config.WEBHOOK_RETRY_CAP_MS,
      window_ms: config.WEBHOOK_RETRY_WINDOW_MS,
    },
  };
}
