/**
 * How a consumer hands a batch to its handler: until the handler takes it. A failure is retried
 * with capped backoff (an engine the handler needs is away: nothing was lost, try again later),
 * except a broken invariant (InvariantError), which no retry fixes: the batch is then handled one
 * message at a time (handlers are idempotent, and a transfer's messages keep their order), and the
 * message that breaks it goes to the dead letters at once.
 */
import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "#packages/log/index.ts";
import { assert, InvariantError } from "#packages/runtime/assert.ts";
import { backoff_ms } from "#packages/runtime/index.ts";
import type { ConsumedMessage } from "./index.ts";

export interface HandlePolicy {
  handleBatch(messages: ConsumedMessage[]): Promise<void>;
  /** Dead-letter one message that broke an invariant. Without it, a breach is retried like any failure. */
  deadLetter?: ((message: ConsumedMessage, reason: string) => Promise<void>) | undefined;
  logger: Logger;
  /** Set once the consumer is stopping: the retries end with an error. */
  isStopped(): boolean;
  /** Called before each attempt (the consumer's liveness watchdog). */
  progress(): void;
  /** The wait before retry `attempt` (default: backoff_ms(attempt, 100, 5 000)). */
  retry_delay_ms?: (attempt: number) => number;
}

export async function handleWithRetry(messages: ConsumedMessage[], policy: HandlePolicy): Promise<void> {
  const broken = await untilHandled(messages, policy);
  if (broken === null) return;
  const deadLetter = policy.deadLetter;
  assert(deadLetter !== undefined, "a breach is returned only when it can be dead-lettered");
  // One of the batch broke an invariant: find which, one message at a time.
  for (const message of messages) {
    const error = await untilHandled([message], policy);
    if (error === null) continue;
    policy.logger.error(
      { err: error, topic: message.topic, partition: message.partition, offset: message.offset.toString() },
      "message breaks an invariant; dead-lettered without retries",
    );
    await deadLetter(message, error.message);
  }
}

/** Handle until the handler takes the messages (null), or breaks an invariant (the error). */
async function untilHandled(
  messages: ConsumedMessage[],
  policy: HandlePolicy,
): Promise<InvariantError | null> {
  const delay_ms = policy.retry_delay_ms ?? ((attempt: number) => backoff_ms(attempt, 100, 5_000));
  for (let attempt = 0; ; attempt++) {
    if (policy.isStopped()) throw new Error("consumer stopping");
    policy.progress();
    try {
      await policy.handleBatch(messages);
      return null;
    } catch (error) {
      if (error instanceof InvariantError && policy.deadLetter !== undefined) return error;
      const delay = delay_ms(attempt);
      policy.logger.warn(
        { err: error, attempt, delay_ms: delay, size: messages.length },
        "batch failed; retrying",
      );
      await sleep(delay);
    }
  }
}
