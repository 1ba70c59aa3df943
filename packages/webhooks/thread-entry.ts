/**
 * The dispatcher's worker thread (started by thread.ts): its own pool, logger and tracing (the
 * same set-up as the service's, so the `webhook deliver` spans join the transfers' traces), the
 * dispatcher, and the messages to and from the main thread.
 */
import { parentPort, threadId, workerData } from "node:worker_threads";
import { createLogger } from "#packages/log/index.ts";
import { createPool } from "#packages/pg/index.ts";
import { assert } from "#packages/runtime/assert.ts";
import { startServiceTracing } from "#packages/tracing/service.ts";
import { startDispatcher } from "./dispatcher.ts";
import type { FromWorker, ToWorker, WorkerData } from "./thread.ts";

assert(parentPort !== null, "thread-entry.ts runs as a worker thread only");
const port = parentPort;
const data = workerData as WorkerData;
const logger = createLogger(data.service, data.log_level).child({ thread: "webhooks", thread_id: threadId });
const tracing = await startServiceTracing(data.service, logger);
const pool = createPool(data.database_url, {
  max: data.pool_max,
  application_name: `${data.service}-webhooks`,
});
const crashAfterSend = new Int32Array(data.crash_after_send);
const wakePending = new Int32Array(data.wake_pending);
const post = (message: FromWorker) => port.postMessage(message);

const dispatcher = startDispatcher({
  ...data.settings,
  pool,
  logger,
  on_result: (result) => post({ type: "result", result }),
  // Until the next claim starts, a wake is redundant (that claim sees the rows committed before
  // it), so the main thread posts none: the flag is taken as the claim starts (see ThreadData).
  before_claim: () => Atomics.store(wakePending, data.index, 0),
  after_send: () => {
    if (Atomics.load(crashAfterSend, 0) !== 1) return;
    logger.fatal({ point: "after_webhook_send" }, "crash point reached: SIGKILL");
    // A signal is the process's: the whole service dies, as from the main thread.
    process.kill(process.pid, "SIGKILL");
  },
});

port.on("message", (message: ToWorker) => {
  if (message.type === "wake") dispatcher.wake();
  else void stop();
});

async function stop(): Promise<void> {
  await dispatcher.stop();
  await pool.end();
  await tracing.shutdown().catch((error: unknown) => logger.warn({ err: error }, "span flush failed"));
  port.close();
}

logger.info("webhook dispatcher thread started");
