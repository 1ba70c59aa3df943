-- A batch's amounts move only with an item's public status. 004 summed the amount of every item
-- of the batch that the statement touched, so an item moving inside one status (posted ->
-- completed) in the same statement as another item's change counted its amount again. The counts
-- were right (they are differences); the amounts were not. The chaos test with batches caught it.
CREATE OR REPLACE FUNCTION disbursements_count_items() RETURNS trigger
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
           AND saga_public_status(o.state) <> saga_public_status(n.state)
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
