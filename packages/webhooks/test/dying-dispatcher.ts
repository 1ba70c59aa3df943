/**
 * A dispatcher process that is killed with SIGKILL right after its first send, before recording
 * it: run by webhooks.test.ts to check that deliveries survive a real kill -9.
 * Reads WEBHOOKS_TEST_DATABASE_URL (with its search_path) and WEBHOOKS_TEST_LEASE_MS.
 */
import { createPool } from "#packages/pg/index.ts";
import { startDispatcher } from "../dispatcher.ts";
import { logger } from "./harness.ts";

const pool = createPool(process.env.WEBHOOKS_TEST_DATABASE_URL ?? "", {
  max: 4,
  application_name: "webhooks-dying",
});
startDispatcher({
  pool,
  logger,
  guard: { allow_private: true },
  attempt_timeout_ms: 1_000,
  concurrency_max: 4,
  endpoint_in_flight_max: 4,
  batch_max: 4,
  idle_poll_ms: 20,
  lease_ms: Number(process.env.WEBHOOKS_TEST_LEASE_MS ?? 2_000),
  retry: { base_ms: 100, cap_ms: 1_000, window_ms: 60_000 },
  after_send: () => process.kill(process.pid, "SIGKILL"),
});
