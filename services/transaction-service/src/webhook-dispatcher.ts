/**
 * transaction-service's webhook dispatcher: on worker threads of its own by default
 * (packages/webhooks/thread.ts, WEBHOOK_DISPATCHER_THREADS of them), so that deliveries do not
 * queue behind the saga's work on the main event loop; WEBHOOK_DISPATCHER_THREAD=false runs it on
 * the main loop instead.
 */

import type { loadConfig } from "#packages/config/index.ts";
import type { Logger } from "#packages/log/index.ts";
import type { startServiceMetrics } from "#packages/metrics/service.ts";
import type { Pool } from "#packages/pg/index.ts";
import type { CrashSwitch } from "#packages/runtime/faults.ts";
import {
  type Dispatcher,
  dispatcherOptions,
  dispatcherSettings,
  startDispatcher,
  startDispatcherThread,
} from "#packages/webhooks/index.ts";
import type { configShape } from "./config.ts";

export function startWebhookDispatcher(parts: {
  service: string;
  config: ReturnType<typeof loadConfig<typeof configShape>>;
  pool: Pool;
  logger: Logger;
  metrics: ReturnType<typeof startServiceMetrics>;
  /** The fault tests' crash points (FAULT_INJECTION=true), else null. */
  crashes: CrashSwitch | null;
}): Dispatcher {
  const { config, crashes } = parts;
  const on_result = parts.metrics.webhookDelivery.bind(parts.metrics);
  if (!config.WEBHOOK_DISPATCHER_THREAD) {
    return startDispatcher({
      ...dispatcherOptions(config, parts.pool, parts.logger),
      on_result,
      after_send: () => crashes?.reached("after_webhook_send"),
    });
  }
  const thread = startDispatcherThread({
    settings: dispatcherSettings(config),
    database_url: config.SAGA_DATABASE_URL,
    pool_max: config.WEBHOOK_DATABASE_POOL_MAX,
    service: parts.service,
    log_level: config.LOG_LEVEL,
    logger: parts.logger,
    on_result,
    threads: config.WEBHOOK_DISPATCHER_THREADS,
  });
  crashes?.onArm((point) => {
    if (point === "after_webhook_send") thread.crashAfterSend();
  });
  return thread;
}
