-- Disbursement records in MongoDB, flowing like transfer records: every visible change of a
-- batch (its counts, amounts, failure reason, updated_at) raises its version and queues a
-- RecordDisbursement command in the outbox, in the statement (and commit) of the change. The
-- command service keeps the highest version it has seen, so a redelivered or reordered
-- snapshot changes nothing. The outbox row names its topic by role ('@commands'): the relay
-- maps it to the commands topic of the service's KAFKA_TOPIC_PREFIX, which the database
-- does not know.
ALTER TABLE disbursements ADD COLUMN version bigint NOT NULL DEFAULT 1;

-- The record as the API shows it, plus its version (packages/contracts/disbursement.ts).
CREATE FUNCTION disbursement_snapshot(d disbursements) RETURNS jsonb
LANGUAGE sql STABLE AS $$
  SELECT jsonb_build_object(
    'id', d.id,
    'version', d.version,
    'status', disbursement_status(d),
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
    'updated_at', to_char(d.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))
$$;

-- Only the database sets the version: one more for every change a reader could see (the API
-- shows updated_at too, so the funding's commit makes a version of its own).
CREATE FUNCTION disbursements_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF (NEW.pending_count, NEW.completed_count, NEW.failed_count, NEW.amount_completed_minor,
      NEW.amount_refunded_minor, NEW.failure_reason, NEW.reference, NEW.updated_at)
     IS DISTINCT FROM
     (OLD.pending_count, OLD.completed_count, OLD.failed_count, OLD.amount_completed_minor,
      OLD.amount_refunded_minor, OLD.failure_reason, OLD.reference, OLD.updated_at) THEN
    NEW.version := OLD.version + 1;
  ELSE
    NEW.version := OLD.version;
  END IF;
  RETURN NEW;
END
$$;
CREATE TRIGGER disbursements_version BEFORE UPDATE ON disbursements
  FOR EACH ROW EXECUTE FUNCTION disbursements_version();

CREATE FUNCTION disbursement_record_command(d disbursements) RETURNS jsonb
LANGUAGE sql VOLATILE AS $$
  SELECT jsonb_build_object('type', 'RecordDisbursement', 'message_id', gen_random_uuid(),
                            'snapshot', disbursement_snapshot(d))
$$;

CREATE FUNCTION disbursements_record() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' OR NEW.version <> OLD.version THEN
    INSERT INTO outbox (topic, key, payload)
    VALUES ('@commands', NEW.id::text, disbursement_record_command(NEW));
  END IF;
  RETURN NULL;
END
$$;
CREATE TRIGGER disbursements_record AFTER INSERT OR UPDATE ON disbursements
  FOR EACH ROW EXECUTE FUNCTION disbursements_record();

-- Batches from before this migration get their record too.
INSERT INTO outbox (topic, key, payload)
SELECT '@commands', d.id::text, disbursement_record_command(d) FROM disbursements d ORDER BY d.id;
