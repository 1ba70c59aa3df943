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
