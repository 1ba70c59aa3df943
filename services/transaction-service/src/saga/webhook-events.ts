/** The webhook events of saga transitions (enqueued by the transition's own statement, see SagaStore). */
import type { WebhookEvent } from "#packages/webhooks/index.ts";
import { publicStatus, type SagaState, type SagaTransfer, snapshotOf } from "./machine.ts";

/**
 * The event a transition raises: `transfer.completed` or `transfer.failed` when it turns the
 * public status from PENDING to final (once per transfer: later internal moves raise nothing),
 * to payer and payee. Its id (the webhook-id) is stable, so redeliveries and re-sends dedupe.
 * Both balances are left out: one body goes to both parties, and neither may see the other's.
 */
export function transferEventOf(expected: SagaState, next: SagaTransfer): WebhookEvent | null {
  const status = publicStatus(next.state);
  if (status === "PENDING" || publicStatus(expected) !== "PENDING") return null;
  const { updated_at: _decided_at, ...snapshot } = snapshotOf(next);
  const kind = status === "COMPLETED" ? "completed" : "failed";
  return {
    id: `${next.id}.${kind}`,
    type: `transfer.${kind}`,
    user_ids: [next.source_user_id, next.dest_user_id],
    data: { transaction: { ...snapshot, source_init_bal: null, dest_init_bal: null } },
  };
}

/** A batch as the payer reads it (GET /disbursements/:id): what `disbursement.completed` carries. */
export interface DisbursementView {
  id: string;
  source_user_id: number;
  status: string;
  [field: string]: unknown;
}

/**
 * `disbursement.completed`, to the payer, when a batch turns final (COMPLETED, PARTIALLY_COMPLETED
 * or FAILED). The statement that makes it final enqueues it, as a transfer's transition does:
 * `hooks AS (${enqueueEventsSql("$n", "ev.data->'disbursement'->>'id' IN (SELECT id::text FROM moved)")})`
 * with `eventsParam([...])` as `$n`, then the dispatcher is woken.
 */
export function disbursementEventOf(disbursement: DisbursementView): WebhookEvent | null {
  if (disbursement.status === "PENDING") return null;
  return {
    id: `${disbursement.id}.completed`,
    type: "disbursement.completed",
    user_ids: [disbursement.source_user_id],
    data: { disbursement },
  };
}
