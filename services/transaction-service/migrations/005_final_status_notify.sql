-- Waiting reads (Prefer: wait=N) on any copy of transaction-service learn that a status became
-- final through PostgreSQL's NOTIFY: sent by the transition's own statement (a trigger, so no
-- caller can forget it) and delivered only if that transaction commits, to every listening copy.
-- The payload is '<kind>:<id>'; other tables (disbursements) reuse the function with their kind.
CREATE FUNCTION notify_final_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('final_status', TG_ARGV[0] || ':' || NEW.id::text);
  RETURN NULL;
END
$$;

-- Once per transfer: when its public status turns from PENDING to COMPLETED or FAILED (see
-- publicStatus in saga/machine.ts); later internal moves (posted -> completed) stay silent.
CREATE TRIGGER transfers_final_status
  AFTER UPDATE OF state ON transfers
  FOR EACH ROW
  WHEN (OLD.state NOT IN ('posted', 'completed', 'failing', 'failed', 'voiding')
        AND NEW.state IN ('posted', 'completed', 'failing', 'failed', 'voiding'))
  EXECUTE FUNCTION notify_final_status('transfer');
