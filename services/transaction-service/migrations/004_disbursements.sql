-- Batch disbursements: one payer, up to 1,000 items, each item an ordinary transfer of the saga.
--
-- The intent is written first, in one transaction: the disbursement row (with its
-- Idempotency-Key) and every item's transfer row, in state `funding`. A `funding` item waits for
-- the batch's one ledger call (it has no step of its own, so the transfer sweep leaves it
-- alone); the disbursement sweep funds any disbursement left `created` by a crash. Once funded,
-- each item moves to `held` (or ends FAILED without money moved) and runs the ordinary saga.
--
-- Status counts are maintained by a statement-level trigger on transfers, in the same statement
-- (and commit) as the item transitions: a read of a 1,000-item batch is one row, not an
-- aggregate, and a batched transition of 100 items updates each disbursement once. When a
-- disbursement's last item becomes final, disbursement_status_changed() is called in that same
-- commit (the place to enqueue what a final status causes, such as a notification).

ALTER TABLE transfers DROP CONSTRAINT transfers_state_check;
ALTER TABLE transfers ADD CONSTRAINT transfers_state_check
  CHECK (state IN ('funding', 'created', 'held', 'recorded', 'posted', 'completed', 'refunding', 'failing', 'failed', 'voiding'));

CREATE TABLE disbursements (
  id                  uuid PRIMARY KEY,
  idempotency_key     text NOT NULL UNIQUE,
  request_fingerprint text NOT NULL,
  source_user_id      bigint NOT NULL CHECK (source_user_id > 0),
  reference           text,
  -- created: intent written, not funded; funded: the ledger held the items; refused: nothing held.
  state               text NOT NULL CHECK (state IN ('created', 'funded', 'refused')),
  failure_reason      text,
  item_count          integer NOT NULL CHECK (item_count BETWEEN 1 AND 1000),
  total_minor         bigint NOT NULL CHECK (total_minor > 0 AND total_minor <= 9007199254740991),
  pending_count       integer NOT NULL CHECK (pending_count >= 0),
  completed_count     integer NOT NULL DEFAULT 0 CHECK (completed_count >= 0),
  failed_count        integer NOT NULL DEFAULT 0 CHECK (failed_count >= 0),
  amount_completed_minor bigint NOT NULL DEFAULT 0 CHECK (amount_completed_minor >= 0),
  amount_refunded_minor  bigint NOT NULL DEFAULT 0 CHECK (amount_refunded_minor >= 0),
  response_status     integer,
  response_body       jsonb,
  attempts            integer NOT NULL DEFAULT 0,
  next_attempt_at     timestamptz NOT NULL,
  created_at          timestamptz NOT NULL,
  updated_at          timestamptz NOT NULL,
  CHECK (pending_count + completed_count + failed_count = item_count)
);
-- The payer's batches, newest first (keyset pagination).
CREATE INDEX disbursements_by_payer ON disbursements (source_user_id, created_at DESC, id DESC);
-- The disbursement sweep scans only unfunded ones.
CREATE INDEX disbursements_unfunded ON disbursements (next_attempt_at) WHERE state = 'created';

ALTER TABLE transfers
  ADD COLUMN disbursement_id uuid REFERENCES disbursements (id),
  ADD COLUMN reference text,
  ADD COLUMN item_index integer;
-- A batch's items in order, and one reference per batch.
CREATE UNIQUE INDEX transfers_by_disbursement ON transfers (disbursement_id, item_index) WHERE disbursement_id IS NOT NULL;
CREATE UNIQUE INDEX transfers_reference_per_disbursement ON transfers (disbursement_id, reference) WHERE disbursement_id IS NOT NULL;

-- The public status of a saga state (machine.ts's publicStatus).
CREATE FUNCTION saga_public_status(p_state text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT AS $$
  SELECT CASE WHEN p_state IN ('posted', 'completed') THEN 'COMPLETED'
              WHEN p_state IN ('failing', 'failed', 'voiding') THEN 'FAILED'
              ELSE 'PENDING' END
$$;

-- A disbursement's public status from its row.
CREATE FUNCTION disbursement_status(d disbursements) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE WHEN d.pending_count > 0 THEN 'PENDING'
              WHEN d.completed_count = d.item_count THEN 'COMPLETED'
              WHEN d.completed_count = 0 THEN 'FAILED'
              ELSE 'PARTIALLY_COMPLETED' END
$$;

-- Called in the commit that changes a disbursement's public status (today: the one that makes
-- it final), with the row as it now stands. Does nothing yet: a notification outbox hooks here.
CREATE FUNCTION disbursement_status_changed(d disbursements, p_old_status text) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
END
$$;

-- Keeps the counts of the disbursements whose items changed public status in this statement.
-- The disbursement rows are locked after the statement's transfer rows and in id order, so two
-- statements cannot deadlock on them.
CREATE FUNCTION disbursements_count_items() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  d disbursements;
  v_old_status text;
BEGIN
  FOR d IN
    SELECT x.* FROM disbursements x
     WHERE x.id IN (SELECT n.disbursement_id FROM new_rows n JOIN old_rows o ON o.id = n.id
                     WHERE n.disbursement_id IS NOT NULL
                       AND saga_public_status(o.state) <> saga_public_status(n.state))
     ORDER BY x.id
       FOR UPDATE
  LOOP
    v_old_status := disbursement_status(d);
    UPDATE disbursements x
       SET pending_count = x.pending_count + dl.pending,
           completed_count = x.completed_count + dl.completed,
           failed_count = x.failed_count + dl.failed,
           amount_completed_minor = x.amount_completed_minor + dl.completed_minor,
           amount_refunded_minor = x.amount_refunded_minor + dl.failed_minor,
           updated_at = now()
      FROM (
        SELECT sum((saga_public_status(n.state) = 'PENDING')::int - (saga_public_status(o.state) = 'PENDING')::int) AS pending,
               sum((saga_public_status(n.state) = 'COMPLETED')::int - (saga_public_status(o.state) = 'COMPLETED')::int) AS completed,
               sum((saga_public_status(n.state) = 'FAILED')::int - (saga_public_status(o.state) = 'FAILED')::int) AS failed,
               sum(CASE WHEN saga_public_status(n.state) = 'COMPLETED' THEN n.amount_minor
                        WHEN saga_public_status(o.state) = 'COMPLETED' THEN -n.amount_minor ELSE 0 END) AS completed_minor,
               sum(CASE WHEN saga_public_status(n.state) = 'FAILED' THEN n.amount_minor
                        WHEN saga_public_status(o.state) = 'FAILED' THEN -n.amount_minor ELSE 0 END) AS failed_minor
          FROM new_rows n JOIN old_rows o ON o.id = n.id
         WHERE n.disbursement_id = d.id
      ) dl
     WHERE x.id = d.id
    RETURNING x.* INTO d;
    IF disbursement_status(d) <> v_old_status THEN
      PERFORM disbursement_status_changed(d, v_old_status);
    END IF;
  END LOOP;
  RETURN NULL;
END
$$;

CREATE TRIGGER transfers_count_disbursement_items AFTER UPDATE ON transfers
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION disbursements_count_items();
