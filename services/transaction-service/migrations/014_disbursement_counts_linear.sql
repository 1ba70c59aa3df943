-- A batch's counts in one linear pass per statement. The trigger of 004/008 joined the
-- transition tables (no statistics, no index) once to find the batches and once per batch to sum
-- them. PL/pgSQL plans those queries once per connection, sized for the transition tables of its
-- first statement: a connection that first moved one item kept a nested loop, and the funding's
-- 1,000-row statement then compared every row with every other (3 s where one pass takes 3 ms).
--
-- Now each row is read once: the new rows count +1 and the old rows -1 in their public status,
-- summed per batch, with no join (an item's amount and batch never change, so its amount cancels
-- out when its status does not move). A batch is touched only when a count or amount changes,
-- and the rows are locked one at a time in id order, after the statement's transfer rows, so
-- two statements still cannot deadlock on them. The row's status before the change follows from
-- the new counts less the statement's deltas, so the batch is not read before it is updated.
-- Results are those of 008: the same counts, amounts, updated_at and version bumps (010), and
-- disbursement_status_changed (005, 007) in the commit of the change that makes a batch final.

-- The public status of a saga state, as 004 gives it for every input (NULL stays NULL), but not
-- STRICT: a strict SQL function whose body is not strict (a CASE) is never inlined, so every row
-- of a query paid a function call; now the planner folds the CASE into the calling query.
CREATE OR REPLACE FUNCTION saga_public_status(p_state text) RETURNS text
LANGUAGE sql IMMUTABLE CALLED ON NULL INPUT AS $$
  SELECT CASE WHEN p_state IN ('posted', 'completed') THEN 'COMPLETED'
              WHEN p_state IN ('failing', 'failed', 'voiding') THEN 'FAILED'
              WHEN p_state IS NOT NULL THEN 'PENDING' END
$$;

CREATE OR REPLACE FUNCTION disbursements_count_items() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  dl record;
  d disbursements;
  v_old disbursements;
BEGIN
  FOR dl IN
    SELECT s.disbursement_id AS id,
           sum(s.sign * (s.status = 'PENDING')::int) AS pending,
           sum(s.sign * (s.status = 'COMPLETED')::int) AS completed,
           sum(s.sign * (s.status = 'FAILED')::int) AS failed,
           sum(CASE WHEN s.status = 'COMPLETED' THEN s.sign * s.amount_minor ELSE 0 END) AS completed_minor,
           sum(CASE WHEN s.status = 'FAILED' THEN s.sign * s.amount_minor ELSE 0 END) AS failed_minor
      FROM (SELECT n.disbursement_id, n.amount_minor, saga_public_status(n.state) AS status, 1 AS sign
              FROM new_rows n WHERE n.disbursement_id IS NOT NULL
            UNION ALL
            SELECT o.disbursement_id, o.amount_minor, saga_public_status(o.state), -1
              FROM old_rows o WHERE o.disbursement_id IS NOT NULL) s
     GROUP BY s.disbursement_id
    HAVING sum(s.sign * (s.status = 'PENDING')::int) <> 0
        OR sum(s.sign * (s.status = 'COMPLETED')::int) <> 0
        OR sum(s.sign * (s.status = 'FAILED')::int) <> 0
        OR sum(CASE WHEN s.status = 'COMPLETED' THEN s.sign * s.amount_minor ELSE 0 END) <> 0
        OR sum(CASE WHEN s.status = 'FAILED' THEN s.sign * s.amount_minor ELSE 0 END) <> 0
     ORDER BY s.disbursement_id
  LOOP
    UPDATE disbursements x
       SET pending_count = x.pending_count + dl.pending,
           completed_count = x.completed_count + dl.completed,
           failed_count = x.failed_count + dl.failed,
           amount_completed_minor = x.amount_completed_minor + dl.completed_minor,
           amount_refunded_minor = x.amount_refunded_minor + dl.failed_minor,
           updated_at = now()
     WHERE x.id = dl.id
    RETURNING x.* INTO d;
    v_old := d;
    v_old.pending_count := d.pending_count - dl.pending;
    v_old.completed_count := d.completed_count - dl.completed;
    v_old.failed_count := d.failed_count - dl.failed;
    IF disbursement_status(d) <> disbursement_status(v_old) THEN
      PERFORM disbursement_status_changed(d, disbursement_status(v_old));
    END IF;
  END LOOP;
  RETURN NULL;
END
$$;
