/**
 * Batch disbursements, wired: the store, the funder (ledger call + saga commit), the sweep that
 * funds what a crash left unfunded, and the routes. main.ts starts it with one call.
 */
import type { Authenticator } from "#packages/http/auth.ts";
import type { RateLimiter } from "#packages/http/rate-limit.ts";
import type { HttpServer } from "#packages/http/server.ts";
import type { Logger } from "#packages/log/index.ts";
import type { CrashHook } from "#packages/runtime/faults.ts";
import type { SagaRunner } from "../saga/runner.ts";
import type { SagaStore } from "../saga/store.ts";
import type { FinalStatusWaiters } from "../waiting.ts";
import { DisbursementFunder, FundingClient } from "./funding.ts";
import type { DisbursementReads } from "./reads.ts";
import { registerDisbursementRoutes } from "./routes.ts";
import { DisbursementStore } from "./store.ts";
import { startDisbursementSweeper } from "./sweeper.ts";

export function startDisbursements(deps: {
  app: HttpServer;
  saga: SagaStore;
  runner: SagaRunner;
  auth: Authenticator;
  limiter: RateLimiter;
  /** `Prefer: wait` reads of a batch (told by the final-status notice its last item's commit sends). */
  waiters: FinalStatusWaiters;
  /** Reads through the cache and the query service, like the transfer reads. */
  reads: DisbursementReads;
  logger: Logger;
  ledger_url: string;
  ledger_token: string;
  crashes: CrashHook;
  /** Wakes the outbox relay after a commit that queued records. */
  onOutbox: () => void;
  timings: { step_timeout_ms: number; record_resend_ms: number; sweep_interval_ms: number };
}): { stop(): Promise<void> } {
  const store = new DisbursementStore(deps.saga.pool);
  store.onOutbox = deps.onOutbox;
  store.onWebhooks = () => deps.saga.onWebhooks(1);
  const funder = new DisbursementFunder({
    store,
    saga: deps.saga,
    client: new FundingClient(deps.ledger_url, deps.ledger_token),
    runner: deps.runner,
    logger: deps.logger,
    waits: { step_ms: deps.timings.step_timeout_ms, record_ms: deps.timings.record_resend_ms },
  });
  funder.crashes = deps.crashes;
  registerDisbursementRoutes(deps.app, {
    store,
    saga: deps.saga,
    funder,
    auth: deps.auth,
    limiter: deps.limiter,
    waiters: deps.waiters,
    reads: deps.reads,
    step_timeout_ms: deps.timings.step_timeout_ms,
  });
  const sweeper = startDisbursementSweeper({
    store,
    funder,
    logger: deps.logger,
    interval_ms: deps.timings.sweep_interval_ms,
    batch_max: 10,
    backoff_base_ms: deps.timings.step_timeout_ms,
    backoff_cap_ms: 60_000,
  });
  return {
    async stop() {
      await sweeper.stop();
      await funder.drained();
    },
  };
}
