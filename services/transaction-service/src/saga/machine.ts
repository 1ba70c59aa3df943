/**
 * The transfer saga as a pure state machine: no I/O, so every transition can be unit- and
 * property-tested. The runner (runner.ts) performs the side effects this file asks for and
 * persists each transition atomically with the message it emits.
 *
 *   created ──hold ok──▶ recorded ──post ok──▶ posted ──record COMPLETED──▶ completed
 *      │                      │                    ▲
 *      │                      │ post rejected      │ void finds the hold posted
 *      │                      ▼ (dest closed)      │ (a late post went through)
 *      │                  refunding ───────────────┘
 *      │ hold rejected        │ void ok
 *      │ (no money moved)     ▼
 *      └────────────────▶ failing ──record FAILED──▶ failed
 *                             ▲
 *                             └──void ok── voiding ◀── hold ok arriving late, in failing or
 *                                                      failed, no hold known
 *
 *   created, recorded, refunding ──ledger breaks an invariant──▶ parked ──operator re-drive──▶ (the same state)
 *
 * The credit follows the debit at once: no record is written or awaited between them (`recorded`
 * is the name of that step from when it waited for a PENDING record; it now means "debited,
 * credit next"). A transfer's first record is usually its final one, awaited (`posted`,
 * `failing`), so a transfer is done only once its record says so. A credit that is late (the
 * ledger away) gets a PENDING record from the sweep, so lists show it meanwhile; the writer never
 * moves a record back, so a PENDING command arriving after the final one changes nothing. `held`
 * is the state that once waited for that PENDING record; a row still in it (written by an
 * earlier version) is treated as `recorded`.
 *
 * Money: `recorded` means A was debited into clearing; `posted` means clearing paid B; `refunding`
 * means the hold must be voided (clearing -> A). A transfer leaves clearing exactly once
 * (post xor void), which the ledger enforces too.
 *
 * `voiding` is a second line of defence: the ledger keeps a hold's refusal final for its
 * transfer id, so a hold cannot succeed after the saga was told it was refused. Should one ever
 * succeed anyway, the transfer is already FAILED and stays so: the saga voids that hold (its
 * money goes back to A) and confirms the FAILED record again. A durable state rather than a
 * one-off void, so that a crash or an unanswered void is retried by the sweep like any step.
 *
 * `parked` holds a transfer whose ledger step met a broken invariant (the ledger answered what
 * the saga's state rules out): a bug to look at, not an outage to retry through. Nothing moves a
 * parked transfer (no input applies) until an operator re-drives it to the state it was parked
 * from. Only states whose public status is still PENDING are parked, so a client never sees a
 * decided status go back.
 */
import type {
  FailureReason,
  TransferRecord,
  TransferSnapshot,
  TransferStatus,
} from "#packages/contracts/transfer.ts";

export const sagaStates = [
  /** A disbursement's item before its batch is funded: no step of its own (disbursements/). */
  "funding",
  "created",
  /** Earlier versions' wait for the PENDING record: now the same as `recorded`. */
  "held",
  "recorded",
  "posted",
  "completed",
  "refunding",
  "failing",
  "failed",
  "voiding",
  /** A broken invariant stopped its ledger step; waits for an operator (store.ts park/redrive). */
  "parked",
] as const;
export type SagaState = (typeof sagaStates)[number];

export interface SagaTransfer {
  id: string;
  state: SagaState;
  source_user_id: number;
  dest_user_id: number;
  amount: number;
  source_init_bal: number | null;
  dest_init_bal: number | null;
  failure_reason: FailureReason | null;
  created_at: string;
  updated_at: string;
  /** A batch item's place in its batch (absent for a lone transfer): its records carry it. */
  place?: BatchPlace | null;
}

export interface BatchPlace {
  disbursement_id: string;
  item_index: number;
  reference: string;
}

export type SagaInput =
  | { kind: "hold_ok"; source_init_bal: number }
  | { kind: "hold_rejected"; reason: FailureReason }
  | { kind: "record_written"; status: TransferStatus }
  | { kind: "record_rejected"; status: TransferStatus }
  | { kind: "post_ok"; dest_init_bal: number }
  | { kind: "post_rejected"; reason: FailureReason }
  | { kind: "void_ok" };

export interface Transition {
  next: SagaTransfer;
  /** The record snapshot to send to transaction-command-service with this transition, if any. */
  record: TransferRecord | null;
}

/** What the saga must do next to leave a state: call the ledger, or wait for the record writer. */
export type NextAction = "hold" | "post" | "void" | "await_record" | "none";

export function nextAction(state: SagaState): NextAction {
  switch (state) {
    case "created":
      return "hold";
    case "held":
    case "recorded":
      return "post";
    case "refunding":
    case "voiding":
      return "void";
    case "posted":
    case "failing":
      return "await_record";
    case "funding":
    case "completed":
    case "failed":
    case "parked":
      return "none";
  }
}

/** States a broken invariant parks: a ledger step is next and the public status is still PENDING. */
export function isParkable(state: SagaState): boolean {
  return state === "created" || state === "held" || state === "recorded" || state === "refunding";
}

export function isFinal(state: SagaState): boolean {
  return state === "completed" || state === "failed";
}

/** The public status: decided as soon as the money is (PENDING while any of it is in flight). */
export function publicStatus(state: SagaState): TransferStatus {
  switch (state) {
    case "posted":
    case "completed":
      return "COMPLETED";
    case "failing":
    case "failed":
    case "voiding":
      return "FAILED";
    default:
      return "PENDING";
  }
}

export function snapshotOf(transfer: SagaTransfer): TransferSnapshot {
  return {
    id: transfer.id,
    amount: transfer.amount,
    source_user_id: transfer.source_user_id,
    dest_user_id: transfer.dest_user_id,
    source_init_bal: transfer.source_init_bal,
    dest_init_bal: transfer.dest_init_bal,
    status: publicStatus(transfer.state),
    failure_reason: transfer.failure_reason,
    created_at: transfer.created_at,
    updated_at: transfer.updated_at,
  };
}

/** The snapshot a record command carries: for a batch's item, with its place in the batch. */
export function recordOf(transfer: SagaTransfer): TransferRecord {
  const snapshot = snapshotOf(transfer);
  return transfer.place ? { ...snapshot, ...transfer.place } : snapshot;
}

/** The record status the saga expects the writer to confirm while it waits in `state`. */
export function awaitedRecordStatus(state: SagaState): TransferStatus | null {
  if (state === "posted") return "COMPLETED";
  if (state === "failing") return "FAILED";
  return null;
}

/**
 * Apply one input. Returns null when the input does not apply to the current state: a
 * duplicate, a stale redelivery or a late answer. Ignoring those is what makes every handler
 * idempotent; anything that would move money twice is unreachable by construction.
 */
export function transition(current: SagaTransfer, input: SagaInput, now: string): Transition | null {
  const to = (state: SagaState, patch: Partial<SagaTransfer> = {}): SagaTransfer => ({
    ...current,
    ...patch,
    state,
    updated_at: now,
  });
  const withRecord = (next: SagaTransfer): Transition => ({ next, record: recordOf(next) });

  switch (current.state) {
    case "created":
      // No record yet: the credit follows at once, and its COMPLETED record is the first one
      // (a credit that is late gets its PENDING record from the sweep: runner.recover).
      if (input.kind === "hold_ok")
        return { next: to("recorded", { source_init_bal: input.source_init_bal }), record: null };
      if (input.kind === "hold_rejected") return withRecord(to("failing", { failure_reason: input.reason }));
      return null;
    case "held":
    case "recorded":
      if (input.kind === "post_ok") return withRecord(to("posted", { dest_init_bal: input.dest_init_bal }));
      if (input.kind === "post_rejected")
        return { next: to("refunding", { failure_reason: input.reason }), record: null };
      return null;
    case "refunding":
      if (input.kind === "void_ok") return withRecord(to("failing"));
      // The void found the hold posted: an earlier post, whose answer was lost or late, went
      // through. The money reached B, so the transfer completes; the refund reason no longer holds.
      if (input.kind === "post_ok")
        return withRecord(to("posted", { dest_init_bal: input.dest_init_bal, failure_reason: null }));
      return null;
    case "voiding":
      if (input.kind === "void_ok") return withRecord(to("failing"));
      return null;
    case "posted":
      // The money has reached B; a record that cannot be written is an operator matter (it is
      // in dead letters), it never undoes the transfer.
      if (
        (input.kind === "record_written" || input.kind === "record_rejected") &&
        input.status === "COMPLETED"
      ) {
        return { next: to("completed"), record: null };
      }
      return null;
    case "failing":
      if (
        (input.kind === "record_written" || input.kind === "record_rejected") &&
        input.status === "FAILED"
      ) {
        return { next: to("failed"), record: null };
      }
      return lateHold(current, input, to);
    case "failed":
      return lateHold(current, input, to);
    case "funding":
    case "completed":
    case "parked":
      return null;
  }
}

/**
 * A hold that succeeded for a transfer already FAILED without one (its hold was refused): never
 * expected (the ledger keeps refusals final), voided if it happens. A hold_ok for a transfer
 * that did hold (and was refunded) is a duplicate and is ignored.
 */
function lateHold(
  current: SagaTransfer,
  input: SagaInput,
  to: (state: SagaState, patch?: Partial<SagaTransfer>) => SagaTransfer,
): Transition | null {
  if (input.kind !== "hold_ok" || current.source_init_bal !== null) return null;
  return { next: to("voiding"), record: null };
}
