-- A disbursement turning final (the last item's transition, see disbursements_count_items in 004)
-- now causes, in that same commit:
-- - a notice on the `final_status` channel (005), so a `Prefer: wait` read of the batch on any copy
--   of transaction-service answers at once;
-- - `disbursement.completed` for the payer's subscribed endpoints, in the webhook outbox (006), in
--   the shape packages/webhooks enqueueEventsSql writes (`{type, timestamp, data}`, webhook-id
--   `<disbursement id>.completed`, one delivery per endpoint). `data.disbursement` is the API's
--   view of the batch (routes.ts toApi).
CREATE OR REPLACE FUNCTION disbursement_status_changed(d disbursements, p_old_status text) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  v_status text := disbursement_status(d);
  v_data jsonb;
BEGIN
  IF v_status = 'PENDING' THEN
    RETURN;
  END IF;
  PERFORM pg_notify('final_status', 'disbursement:' || d.id::text);
  v_data := jsonb_build_object('disbursement', jsonb_build_object(
    'id', d.id,
    'status', v_status,
    'reference', d.reference,
    'source_user_id', d.source_user_id,
    'item_count', d.item_count,
    'total_amount', d.total_minor,
    'counts', jsonb_build_object('pending', d.pending_count, 'completed', d.completed_count,
                                 'failed', d.failed_count),
    'amount_completed', d.amount_completed_minor,
    'amount_refunded', d.amount_refunded_minor,
    'failure_reason', d.failure_reason,
    'created_at', to_char(d.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
    'updated_at', to_char(d.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')));
  INSERT INTO webhook_deliveries
       (id, endpoint_id, webhook_id, event_type, payload, next_attempt_at, retry_from, created_at, updated_at)
  SELECT gen_random_uuid(), e.id, d.id::text || '.completed', 'disbursement.completed',
         jsonb_build_object('type', 'disbursement.completed',
                            'timestamp', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                            'data', v_data),
         now(), now(), now(), now()
    FROM webhook_endpoints e
   WHERE e.owner_user_id = d.source_user_id AND 'disbursement.completed' = ANY (e.events)
     AND e.state = 'enabled'
  ON CONFLICT (webhook_id, endpoint_id) DO NOTHING;
END
$$;
