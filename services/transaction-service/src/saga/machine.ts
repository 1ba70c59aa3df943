/**
 * The transfer saga as a pure state machine: no I/O, so every transition can be unit- and
 * property-tested. The runner (runner.ts) performs the side effects this file asks for and
 * persists each transition atomically with the message it emits.
 *
 *   created ──transfer ok──▶ posted ──record COMPLETED──▶ completed
 *      │                       ▲
 *      │ transfer refused      │ void finds the hold posted
 *      │ (no money moved)      │ (a late post went through)
 *      │                       │
 *      │         recorded ──post ok──┘ (a disbursement's funded item, or a row held by an
 *      │            │                   earlier version)
 *      │            │ post refused (dest closed)
 *      │            ▼
 *      │        refunding ──void ok──┐
 *      ▼                             ▼
 *   failing ◀────────────────────────┘ ──record FAILED──▶ failed     voiding ──void ok──▶ failing
 *
 *   created, recorded, refunding ──ledger breaks an invariant──▶ parked ──operator re-drive──▶ (the same state)
 *
 * A lone transfer is one ledger step: `transfer` debits A and credits B in one ledger commit, or
 * refuses with no money moved (a credit that cannot land is refunded within the step). Its first
 * record is its final one, awaited (`posted`, `failing`), so a transfer is done only once its
 * record says so. The ledger keeps a refusal final for its transfer id, so a transfer refused
 * once cannot succeed later: a copy of the step that was still waiting answers the same refusal.
 *
 * Two-phase steps remain for what is already held: a disbursement's item, funded with its batch
 * (disbursements/), waits in `recorded` for its credit (post), refunded (void) if the payee
 * cannot take it. Rows an earlier version left in `held`, `recorded` or `voiding` are driven on
 * the same way. A credit that is late (the ledger away) gets a PENDING record from the sweep, so
 * lists show it meanwhile; the writer never moves a record back, so a PENDING command arriving
 * after the final one changes nothing.
 *
 * Money: `posted` means B was credited (from A or from clearing); `recorded` means the item's
 * money is in clearing, credit next; `refunding` and `voiding` mean a hold must be voided
 * (clearing -> A). A hold leaves clearing exactly once (post xor void), which the ledger
 * enforces too.
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
  /** Debited into clearing, credit next: a disbursement's funded item (or an earlier version's hold). */
  "recorded",
  "posted",
  "completed",
  "refunding",
  "failing",
  "failed",
  /** An earlier version's late hold, to refund: the void, then the FAILED record again. */
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
  | { kind: "transfer_ok"; source_init_bal: number; dest_init_bal: number }
  | { kind: "transfer_rejected"; reason: FailureReason }
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
export type NextAction = "transfer" | "post" | "void" | "await_record" | "none";

export function nextAction(state: SagaState): NextAction {
  switch (state) {
    case "created":
      return "transfer";
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
      if (input.kind === "transfer_ok") {
        const { source_init_bal, dest_init_bal } = input;
        return withRecord(to("posted", { source_init_bal, dest_init_bal }));
      }
      if (input.kind === "transfer_rejected")
        return withRecord(to("failing", { failure_reason: input.reason }));
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
      return null;
    case "failed":
    case "funding":
    case "completed":
    case "parked":
      return null;
  }
}
