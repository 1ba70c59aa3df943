-- The W3C trace context of the request that created a disbursement, so that the
-- `disbursement.completed` deliveries its completion causes continue that trace (as a transfer's
-- deliveries continue its creating request's, 012). Null for disbursements created before this column.
ALTER TABLE disbursements ADD COLUMN traceparent text;

-- disbursement_status_changed() (007) enqueues `disbursement.completed` in the commit that makes
-- the batch final; each such delivery takes the batch's trace here, in that same INSERT. The
-- delivery's disbursement id is the batch's own (007 writes d.id), so the cast cannot fail.
CREATE FUNCTION webhook_delivery_disbursement_trace() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  NEW.traceparent := (SELECT d.traceparent FROM disbursements d
                       WHERE d.id = (NEW.payload->'data'->'disbursement'->>'id')::uuid);
  RETURN NEW;
END
$$;

CREATE TRIGGER webhook_deliveries_disbursement_trace
  BEFORE INSERT ON webhook_deliveries
  FOR EACH ROW WHEN (NEW.event_type = 'disbursement.completed' AND NEW.traceparent IS NULL)
  EXECUTE FUNCTION webhook_delivery_disbursement_trace();
