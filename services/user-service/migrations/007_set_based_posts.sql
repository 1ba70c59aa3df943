-- user-service: the posts of one ledger_apply_batch call, set-based. The saga settles a
-- disbursement's items in packs of up to ~250 posts per call; 002 ran ledger_post once per item
-- (about ten statements each: a row lock on the hold, one on the payee's wallet, two updates, a
-- posting and two entries). A payee credited by many items of one call had its wallet row
-- rewritten once per item, each a new row version that the transaction cannot prune.
--
-- Now each run of posts that follow one another in the call's lock order is one pass: the holds
-- locked, the payees' wallets locked in user id order, one update per payee's wallet, one update
-- of the holds, one insert of postings and one of entries. Every answer, lock and journal line
-- is the one ledger_post would have made, step by step, in the same order:
-- - Locks: the advisory locks first (phase 1 of 002, unchanged), then the wallets in the order of
--   002's phase 2. A run is a stretch of that order holding posts only, so locking its payees'
--   wallets at once, in user id order, takes them in the order the steps would have; a hold or
--   void between two runs runs between them, as before. The holds' row locks are never waited for
--   (002), so taking them first changes no wait. Only the wallets of held holds are locked, as
--   ledger_post locks only those.
-- - Whether a payee is open is asked in a statement after its wallet's lock (a new snapshot), as
--   ledger_post asks it.
-- - The journal: one posting and two entries per post (clearing, then the wallet), written in the
--   run's order, and the wallet's balance after each credit a running balance in that order: the
--   order ledger_post would have applied them, by wallet, then transfer id.
-- - Room: ledger_post asks ledger_credit_room per credit, which keeps the bound unchanged while
--   balance + bound + amount fits 2^53-1. Credits only grow the balance, so every credit of a run
--   fits that way exactly when the payee's balance + bound + the run's total to them fits. When it
--   does for every payee, no credit is refused for room and no bound changes. When it does not
--   for some payee (a wallet near the ceiling, where an item may be refused alone), the whole run
--   goes through ledger_post item by item, which decides as before.
-- - The deferred checks of 001 run on the same rows.
-- A run of one post takes ledger_post directly: one pass buys nothing there.
--
-- Plans. Every statement here reaches the holds of the call by primary key, once per hold, and
-- never filters the holds table by state: holds are never deleted, so a scan of the table grows with
-- the whole history, and the partial indexes of 001 on held holds look empty to the planner
-- whenever the last analyze found none held (right after a pack is posted), so a lookup that also
-- says state = 'held' may scan every held hold instead (measured: ledger_post's UPDATE of the hold
-- took 0.6-7 ms with 4,000 holds held, scanning holds_held_by_source). The holds are read once,
-- under their row locks, into an array that the later statements use.

-- The posts of one run, in the order given (the call's lock order), with each one's ordinal in
-- the call. Answers as ledger_post would, one row per post, in the order given.
CREATE FUNCTION ledger_post_run(p_transfer_ids uuid[], p_ordinals integer[]) RETURNS TABLE (
  ordinal integer,
  result text,
  transfer_id uuid,
  source_user_id bigint,
  dest_user_id bigint,
  amount_minor bigint,
  state text,
  source_balance_before_minor bigint,
  dest_balance_before_minor bigint,
  created_at timestamptz,
  updated_at timestamptz
)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  v_count integer := coalesce(cardinality(p_transfer_ids), 0);
  v_holds holds[];
  v_posted holds[];
  v_credits bigint;
  v_tight boolean;
  s ledger_step;
BEGIN
  IF coalesce(cardinality(p_ordinals), 0) <> v_count THEN
    RAISE EXCEPTION 'ledger_post_run: % transfer ids, % ordinals', v_count, cardinality(p_ordinals)
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF v_count = 0 THEN
    RETURN;
  END IF;
  IF v_count = 1 THEN
    s := ledger_post(p_transfer_ids[1]);
    RETURN QUERY SELECT p_ordinals[1], s.result, s.transfer_id, s.source_user_id, s.dest_user_id,
      s.amount_minor, s.state, s.source_balance_before_minor, s.dest_balance_before_minor,
      s.created_at, s.updated_at;
    RETURN;
  END IF;

  -- The holds, locked and read once, each by its primary key (see "Plans" at the top); the rest
  -- works on this copy, which nobody else can change while we hold the row locks.
  SELECT coalesce(array_agg(x.h ORDER BY o.pos), '{}') INTO v_holds
  FROM unnest(p_transfer_ids) WITH ORDINALITY AS o(id, pos)
  CROSS JOIN LATERAL (SELECT h FROM holds h WHERE h.transfer_id = o.id FOR UPDATE OF h) x;
  -- The payees' money locks, in user id order (see the top).
  PERFORM FROM accounts a
  WHERE a.user_id IN (SELECT h.dest_user_id FROM unnest(v_holds) h WHERE h.state = 'held')
  ORDER BY a.user_id
  FOR UPDATE OF a;

  -- A new statement, a new snapshot: which payees are open, and whether every credit fits.
  SELECT EXISTS (
    SELECT FROM unnest(v_holds) h
    JOIN accounts a ON a.user_id = h.dest_user_id
    JOIN users u ON u.id = h.dest_user_id AND u.deleted_at IS NULL
    WHERE h.state = 'held'
    GROUP BY a.id, a.balance_minor, a.held_out_bound_minor
    HAVING a.balance_minor::numeric + a.held_out_bound_minor + sum(h.amount_minor) > 9007199254740991
  ) INTO v_tight;

  IF v_tight THEN
    FOR v_i IN 1 .. v_count LOOP
      s := ledger_post(p_transfer_ids[v_i]);
      ordinal := p_ordinals[v_i];
      result := s.result;
      transfer_id := s.transfer_id;
      source_user_id := s.source_user_id;
      dest_user_id := s.dest_user_id;
      amount_minor := s.amount_minor;
      state := s.state;
      source_balance_before_minor := s.source_balance_before_minor;
      dest_balance_before_minor := s.dest_balance_before_minor;
      created_at := s.created_at;
      updated_at := s.updated_at;
      RETURN NEXT;
    END LOOP;
    RETURN;
  END IF;

  -- The credits, each with its payee's balance before it (the balance under the lock plus the
  -- earlier credits of this run to the same payee), in one statement. The holds are updated
  -- without a state guard in the WHERE (see "Plans"): holds_forward_only (001) raises on any
  -- update of a hold that is not held, and every one of these was held under its row lock.
  WITH items AS (
    SELECT h.transfer_id AS id, h.pos, h.amount_minor AS amount, a.id AS account_id,
           a.balance_minor + coalesce(sum(h.amount_minor) OVER (
             PARTITION BY a.id ORDER BY h.pos ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS before
    -- v_holds is in the run's order.
    FROM unnest(v_holds) WITH ORDINALITY AS h(transfer_id, source_user_id, dest_user_id, amount_minor, state,
                                             source_balance_before_minor, dest_balance_before_minor,
                                             created_at, updated_at, pos)
    JOIN accounts a ON a.user_id = h.dest_user_id
    JOIN users u ON u.id = h.dest_user_id AND u.deleted_at IS NULL
    WHERE h.state = 'held'
  ), credited AS (
    UPDATE accounts a SET balance_minor = a.balance_minor + t.total, updated_at = now()
    FROM (SELECT i.account_id, sum(i.amount)::bigint AS total FROM items i GROUP BY i.account_id) t
    WHERE a.id = t.account_id
  ), posted AS (
    UPDATE holds h SET state = 'posted', dest_balance_before_minor = i.before, updated_at = now()
    FROM items i
    WHERE h.transfer_id = i.id
    RETURNING h
  ), journal AS (
    INSERT INTO postings (kind, transfer_id)
    SELECT 'post', i.id FROM items i ORDER BY i.pos
    RETURNING postings.id, postings.transfer_id
  ), journaled AS (
    INSERT INTO entries (posting_id, account_id, amount_minor, balance_after_minor)
    SELECT p.id, x.account_id, x.amount, x.balance_after
    FROM journal p JOIN items i ON i.id = p.transfer_id,
         LATERAL (VALUES (1, 2::bigint, -i.amount, NULL::bigint),
                         (2, i.account_id, i.amount, i.before + i.amount)) AS x(leg, account_id, amount, balance_after)
    ORDER BY p.id, x.leg
  )
  SELECT coalesce((SELECT array_agg(posted.h) FROM posted), '{}'), (SELECT count(*) FROM items)
  INTO v_posted, v_credits;
  IF cardinality(v_posted) <> v_credits THEN
    RAISE EXCEPTION 'ledger_post_run: % credits, % holds posted', v_credits, cardinality(v_posted);
  END IF;

  -- The answers: a hold posted now as it now stands, any other as it stood under its lock
  -- (posted before: ok; voided; still held: the payee is closed or has no wallet).
  RETURN QUERY
  SELECT p_ordinals[o.pos::integer],
         CASE WHEN h.transfer_id IS NULL THEN 'hold_not_found'
              WHEN n.transfer_id IS NOT NULL OR h.state = 'posted' THEN 'ok'
              WHEN h.state = 'voided' THEN 'hold_voided'
              ELSE 'dest_unavailable' END,
         h.transfer_id, h.source_user_id, h.dest_user_id, h.amount_minor, coalesce(n.state, h.state),
         h.source_balance_before_minor, coalesce(n.dest_balance_before_minor, h.dest_balance_before_minor),
         h.created_at, coalesce(n.updated_at, h.updated_at)
  FROM unnest(p_transfer_ids) WITH ORDINALITY AS o(id, pos)
  LEFT JOIN unnest(v_holds) h ON h.transfer_id = o.id
  LEFT JOIN unnest(v_posted) n ON n.transfer_id = o.id
  ORDER BY o.pos;
END
$$;

-- As in 002, with the posts gathered into runs (see the top): a run ends at the next hold or
-- void, which is applied after it, in its place in the lock order.
CREATE OR REPLACE FUNCTION ledger_apply_batch(
  p_ops text[],
  p_transfer_ids uuid[],
  p_source_user_ids bigint[],
  p_dest_user_ids bigint[],
  p_amounts_minor bigint[]
) RETURNS TABLE (
  ordinal integer,
  result text,
  transfer_id uuid,
  source_user_id bigint,
  dest_user_id bigint,
  amount_minor bigint,
  state text,
  source_balance_before_minor bigint,
  dest_balance_before_minor bigint,
  created_at timestamptz,
  updated_at timestamptz
)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  v_count integer := coalesce(cardinality(p_ops), 0);
  v_key integer;
  v_step record;
  v_run_ids uuid[] := '{}';
  v_run_ordinals integer[] := '{}';
  s ledger_step;
BEGIN
  IF v_count NOT BETWEEN 1 AND 1000
     OR coalesce(cardinality(p_transfer_ids), 0) <> v_count
     OR coalesce(cardinality(p_source_user_ids), 0) <> v_count
     OR coalesce(cardinality(p_dest_user_ids), 0) <> v_count
     OR coalesce(cardinality(p_amounts_minor), 0) <> v_count THEN
    RAISE EXCEPTION 'ledger_apply_batch: give 1..1000 steps in arrays of one length'
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF EXISTS (SELECT FROM unnest(p_ops) AS o(op) WHERE o.op IS NULL OR o.op NOT IN ('hold', 'post', 'void')) THEN
    RAISE EXCEPTION 'ledger_apply_batch: every op must be hold, post or void'
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF (SELECT count(DISTINCT t.id) FROM unnest(p_transfer_ids) AS t(id)) <> v_count
     OR array_position(p_transfer_ids, NULL) IS NOT NULL THEN
    RAISE EXCEPTION 'ledger_apply_batch: every transfer id must be given, once'
      USING ERRCODE = 'invalid_parameter_value';
  END IF;

  -- Phase 1: the transfers' advisory locks, in key order (see the lock order at the top of 002).
  FOR v_key IN
    SELECT DISTINCT ledger_transfer_lock_key(t.id) AS k FROM unnest(p_transfer_ids) AS t(id) ORDER BY k
  LOOP
    PERFORM pg_advisory_xact_lock(7274, v_key);
  END LOOP;

  -- Phase 2: the steps in wallet order, as in 002.
  FOR v_step IN
    SELECT o.i::integer AS i, o.op, o.id, o.source_user_id, o.dest_user_id, o.amount_minor
    FROM unnest(p_ops, p_transfer_ids, p_source_user_ids, p_dest_user_ids, p_amounts_minor)
           WITH ORDINALITY AS o(op, id, source_user_id, dest_user_id, amount_minor, i)
    -- Each hold looked up by its primary key (see "Plans" at the top).
    LEFT JOIN LATERAL (SELECT h.dest_user_id, h.source_user_id FROM holds h
                       WHERE h.transfer_id = o.id OFFSET 0) h ON o.op <> 'hold'
    ORDER BY CASE o.op WHEN 'hold' THEN o.source_user_id
                       WHEN 'post' THEN h.dest_user_id
                       ELSE h.source_user_id END NULLS FIRST,
             o.id
  LOOP
    IF v_step.op = 'post' THEN
      v_run_ids := v_run_ids || v_step.id;
      v_run_ordinals := v_run_ordinals || v_step.i;
      CONTINUE;
    END IF;
    IF cardinality(v_run_ids) > 0 THEN
      RETURN QUERY SELECT * FROM ledger_post_run(v_run_ids, v_run_ordinals);
      v_run_ids := '{}';
      v_run_ordinals := '{}';
    END IF;
    IF v_step.op = 'hold' THEN
      s := ledger_hold(v_step.id, v_step.source_user_id, v_step.dest_user_id, v_step.amount_minor);
    ELSE
      s := ledger_void(v_step.id);
    END IF;
    ordinal := v_step.i;
    result := s.result;
    transfer_id := s.transfer_id;
    source_user_id := s.source_user_id;
    dest_user_id := s.dest_user_id;
    amount_minor := s.amount_minor;
    state := s.state;
    source_balance_before_minor := s.source_balance_before_minor;
    dest_balance_before_minor := s.dest_balance_before_minor;
    created_at := s.created_at;
    updated_at := s.updated_at;
    RETURN NEXT;
  END LOOP;
  RETURN QUERY SELECT * FROM ledger_post_run(v_run_ids, v_run_ordinals);
END
$$;

-- Post and void of one hold: as in 006, with the hold's update found by primary key alone (see
-- "Plans" at the top: with the state in the WHERE, one post or void scanned every held hold when
-- the statistics made the partial indexes look empty).
CREATE OR REPLACE FUNCTION ledger_post(p_transfer_id uuid) RETURNS ledger_step
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  h holds;
  v_account_id bigint;
  v_balance_minor bigint;
  v_held_out_bound_minor bigint;
  v_held_out_minor bigint;
  v_balance_after_minor bigint;
BEGIN
  IF p_transfer_id IS NULL THEN
    RAISE EXCEPTION 'ledger_post: no transfer id' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  PERFORM ledger_lock_transfer(p_transfer_id);
  SELECT * INTO h FROM holds WHERE transfer_id = p_transfer_id FOR UPDATE;
  IF NOT FOUND THEN
    RETURN ledger_step_of('hold_not_found', NULL);
  END IF;
  IF h.state = 'posted' THEN
    RETURN ledger_step_of('ok', h);
  END IF;
  IF h.state = 'voided' THEN
    RETURN ledger_step_of('hold_voided', h);
  END IF;

  SELECT id, balance_minor, held_out_bound_minor INTO v_account_id, v_balance_minor, v_held_out_bound_minor
  FROM accounts WHERE user_id = h.dest_user_id FOR UPDATE;
  PERFORM FROM users WHERE id = h.dest_user_id AND deleted_at IS NULL;
  IF v_account_id IS NULL OR NOT FOUND THEN
    RETURN ledger_step_of('dest_unavailable', h);
  END IF;
  v_held_out_minor := ledger_credit_room(h.dest_user_id, v_balance_minor, v_held_out_bound_minor, h.amount_minor);
  IF v_held_out_minor IS NULL THEN
    RETURN ledger_step_of('dest_unavailable', h);
  END IF;

  UPDATE accounts SET balance_minor = balance_minor + h.amount_minor, held_out_bound_minor = v_held_out_minor,
                      updated_at = now()
  WHERE id = v_account_id
  RETURNING balance_minor INTO v_balance_after_minor;
  -- Under the hold's row lock the state is known to be 'held'; holds_forward_only (001) is the
  -- second line. No state guard in the WHERE (see "Plans" at the top).
  UPDATE holds SET state = 'posted', dest_balance_before_minor = v_balance_minor, updated_at = now()
  WHERE transfer_id = p_transfer_id
  RETURNING * INTO STRICT h;
  PERFORM ledger_journal('post', p_transfer_id, h.amount_minor,
                         2, NULL, v_account_id, v_balance_after_minor);
  RETURN ledger_step_of('ok', h);
END
$$;

CREATE OR REPLACE FUNCTION ledger_void(p_transfer_id uuid) RETURNS ledger_step
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  h holds;
  v_account_id bigint;
  v_balance_after_minor bigint;
BEGIN
  IF p_transfer_id IS NULL THEN
    RAISE EXCEPTION 'ledger_void: no transfer id' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  PERFORM ledger_lock_transfer(p_transfer_id);
  SELECT * INTO h FROM holds WHERE transfer_id = p_transfer_id FOR UPDATE;
  IF NOT FOUND THEN
    RETURN ledger_step_of('hold_not_found', NULL);
  END IF;
  IF h.state = 'voided' THEN
    RETURN ledger_step_of('ok', h);
  END IF;
  IF h.state = 'posted' THEN
    RETURN ledger_step_of('hold_posted', h);
  END IF;

  -- The refund leaves the bound. The bound counts every held hold, so it is never below the
  -- amount; were it ever (a bug, which the audit names), the refund still lands rather than
  -- failing on the CHECK and aborting its batch.
  UPDATE accounts SET balance_minor = balance_minor + h.amount_minor,
    held_out_bound_minor = greatest(held_out_bound_minor - h.amount_minor, 0), updated_at = now()
  WHERE user_id = h.source_user_id
  RETURNING id, balance_minor INTO v_account_id, v_balance_after_minor;
  IF v_account_id IS NULL THEN
    RAISE EXCEPTION 'ledger_void: the wallet of user % is missing', h.source_user_id;
  END IF;
  -- As in ledger_post: no state guard in the WHERE; holds_forward_only is the second line.
  UPDATE holds SET state = 'voided', updated_at = now()
  WHERE transfer_id = p_transfer_id
  RETURNING * INTO STRICT h;
  PERFORM ledger_journal('void', p_transfer_id, h.amount_minor,
                         2, NULL, v_account_id, v_balance_after_minor);
  RETURN ledger_step_of('ok', h);
END
$$;
