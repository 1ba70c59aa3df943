/**
 * The batch workload: closed-loop clients, each sending a disbursement of `batch_size` items
 * (bearer token of the payer, fresh Idempotency-Key) and then reading it until it is final.
 * Reads ask `Prefer: wait=N` (answered at once by a server that does not wait, then polled with
 * a pause). Throughput counts only items of batches seen final and COMPLETED.
 */
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { assert } from "#packages/runtime/assert.ts";
import { countError, type ErrorKinds, errorKind, statusKind } from "./errors.ts";
import type { LoadTarget } from "./load.ts";

export interface BatchOptions {
  /** Items per disbursement (at most 1,000). */
  batch_size: number;
  /** Disbursements in flight at once. */
  concurrency: number;
  duration_s: number;
  /** Longest wait a read asks for (Prefer: wait=N), seconds. */
  wait_s: number;
  /** Stop after this many disbursements were sent (a counted run), even before the duration. */
  batches_max?: number;
}

export interface BatchResult {
  duration_s: number;
  batches_sent: number;
  batches_final: number;
  items_completed: number;
  items_failed: number;
  errors: number;
  /** The errors by kind (an unexpected answer's status, a failed call's code, "FINAL_TIMEOUT"). */
  error_kinds: ErrorKinds;
  /** Completed items per second. */
  batch_tps: number;
  /** From POST to seen final, per batch. */
  batch_p50_ms: number;
  batch_p99_ms: number;
}

/** Payers take turns, each paying `batch_size` others; nobody pays themself. */
export function itemsFor(
  wallets: readonly number[],
  payer_index: number,
  batch_size: number,
  amount_max_minor: number,
  random: () => number = Math.random,
): { payer: number; items: { dest_user_id: number; amount: number; reference: string }[] } {
  assert(wallets.length >= 2, "the batch workload needs two wallets");
  const payer = wallets[payer_index % wallets.length] as number;
  const items = Array.from({ length: batch_size }, (_, i) => {
    let dest = payer;
    while (dest === payer) dest = wallets[Math.floor(random() * wallets.length)] as number;
    return {
      dest_user_id: dest,
      amount: 1 + Math.floor(random() * amount_max_minor),
      reference: `item-${i}`,
    };
  });
  return { payer, items };
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return Math.round(sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0);
}

export async function batchLoop(
  target: LoadTarget,
  wallets: readonly number[],
  options: BatchOptions,
): Promise<BatchResult> {
  const deadline = performance.now() + options.duration_s * 1000;
  const times: number[] = [];
  let next_payer = 0;
  const r = { batches_sent: 0, batches_final: 0, items_completed: 0, items_failed: 0, errors: 0 };
  const error_kinds: ErrorKinds = {};
  const failed = (kind: string): void => {
    r.errors += 1;
    countError(error_kinds, kind);
  };

  const oneBatch = async (): Promise<void> => {
    const { payer, items } = itemsFor(wallets, next_payer++, options.batch_size, target.amount_max_minor);
    const auth = { authorization: `Bearer ${await target.tokenFor(payer)}` };
    const t0 = performance.now();
    const key = `bench-batch-${process.pid}-${t0.toFixed(3)}-${next_payer}`;
    const posted = await target.api.call(
      "POST",
      "/disbursements",
      { ...auth, "idempotency-key": key },
      { source_user_id: payer, items },
    );
    if (posted.status !== 201) {
      failed(statusKind(posted.status));
      return;
    }
    const id: string = posted.body.data.disbursement.id;
    const give_up = t0 + target.final_timeout_ms;
    while (performance.now() < give_up) {
      const read = await target.api.call("GET", `/disbursements/${id}`, {
        ...auth,
        prefer: `wait=${options.wait_s}`,
      });
      const d = read.status === 200 ? read.body.data.disbursement : null;
      if (d !== null && d.status !== "PENDING") {
        times.push(performance.now() - t0);
        r.batches_final += 1;
        r.items_completed += d.counts.completed;
        r.items_failed += d.counts.failed;
        return;
      }
      // Still PENDING: a server that waited has spent the wait; one that does not is polled gently.
      await sleep(100);
    }
    failed("FINAL_TIMEOUT");
  };

  const worker = async (): Promise<void> => {
    const more = () => r.batches_sent < (options.batches_max ?? Number.POSITIVE_INFINITY);
    while (performance.now() < deadline && more()) {
      // Counted when sent, so that two clients never send one more than batches_max between them.
      r.batches_sent += 1;
      await oneBatch().catch((error: unknown) => failed(errorKind(error)));
    }
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: options.concurrency }, worker));
  const duration_s = (performance.now() - started) / 1000;
  const sorted = [...times].sort((a, b) => a - b);
  return {
    duration_s: Math.round(duration_s * 10) / 10,
    ...r,
    error_kinds,
    batch_tps: Math.round((r.items_completed / duration_s) * 10) / 10,
    batch_p50_ms: percentile(sorted, 50),
    batch_p99_ms: percentile(sorted, 99),
  };
}
