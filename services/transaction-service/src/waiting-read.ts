/**
 * `GET /transactions/:id` with `Prefer: wait=N`: the read is held until the transfer's status
 * is final or the wait runs out, and answered with `Preference-Applied: wait=N` either way. A
 * read beyond the waiting bounds is answered at once, without `Preference-Applied`.
 */
import type { FastifyReply, FastifyRequest } from "fastify";
import type { TransferSnapshot } from "#packages/contracts/transfer.ts";
import type { Principal } from "#packages/http/auth.ts";
import { snapshotOf } from "./saga/machine.ts";
import type { SagaStore } from "./saga/store.ts";
import { type FinalKind, type FinalStatusWaiters, preferredWait_s } from "./waiting.ts";

/** Bounds are per caller: a user's token, or the operator's credential as one caller. */
export function callerOf(principal: Principal): string {
  return principal.kind === "user" ? `user:${principal.user_id}` : principal.kind;
}

/**
 * Waits as the request prefers, for any kind of record: `read` gives its current state (from
 * the source of truth, not a cache a notice may outrun). Returns `first` without a preference.
 */
export async function waitAsPreferred<T>(
  request: FastifyRequest,
  reply: FastifyReply,
  options: {
    waiters: FinalStatusWaiters;
    principal: Principal;
    kind: FinalKind;
    id: string;
    first: T;
    read: () => Promise<T>;
    isFinal: (value: T) => boolean;
  },
): Promise<T> {
  const wait_s = preferredWait_s(request.headers.prefer);
  if (wait_s === null) return options.first;
  // The answer depends on the preference: a shared cache must not serve one for the other.
  reply.header("vary", "Prefer");
  const applied = () => reply.header("preference-applied", `wait=${wait_s}`);
  if (options.isFinal(options.first) || wait_s === 0) {
    applied();
    return options.first;
  }
  // The client hanging up ends the wait (and frees its slot) at once.
  const gone = new AbortController();
  const onClose = () => gone.abort();
  reply.raw.once("close", onClose);
  try {
    const result = await options.waiters.waitForFinal({
      kind: options.kind,
      id: options.id,
      caller: callerOf(options.principal),
      wait_ms: wait_s * 1_000,
      read: options.read,
      isFinal: options.isFinal,
      signal: gone.signal,
    });
    if (result.applied) applied();
    return result.value;
  } finally {
    reply.raw.off("close", onClose);
  }
}

/** The transfer as the saga's row has it (the row a final status is committed to first). */
export function transferWait(
  store: SagaStore,
  id: string,
  first: TransferSnapshot,
): { read: () => Promise<TransferSnapshot>; isFinal: (t: TransferSnapshot) => boolean } {
  return {
    read: async () => {
      const row = await store.get(id);
      return row === null ? first : snapshotOf(row);
    },
    isFinal: (t) => t.status !== "PENDING",
  };
}
