-- user-service: a one-step transfer, so that a lone transfer's debit and credit are one ledger
-- step in one commit instead of two steps (hold, then post) in two commits. The saga used to
-- commit a transition between them (`recorded`) and wait for a second ledger call; that cost a
-- saga commit, a ledger call and a ledger commit per transfer, and a client's POST waited on all
-- of them in turn.
--
-- ledger_transfer(id, source, dest, amount) moves the money from the payer's wallet to the
-- payee's in one pass, and leaves what a hold and its post would have left:
-- - the hold row, inserted already posted (with both balances before), so that every later
--   question about the transfer (a retry, a post, a void, the audit) is answered from it;
-- - the journal of both steps: a 'hold' posting (wallet -> clearing) and a 'post' posting
--   (clearing -> wallet), written in two statements;
-- - the payee's held-out bound as a post leaves it (ledger_credit_room, 006); the payer's is left
--   alone, as nothing stays held out of it.
-- Refusals, decided before anything is written:
-- - same_wallet, hold_mismatch, and the hold's final refusals (003): dest_not_found (the payee
--   has no open wallet), source_not_found, insufficient_funds, written to hold_refusals and
--   answered again to every later copy;
-- - dest_unavailable: no room under 2^53-1 for the credit. Final too: the hold row is inserted
--   voided (no money moved, so no journal), and a voided hold answers dest_unavailable for ever.
-- Idempotent by transfer id: a retry finds the hold posted (ok, the first balances) or voided
-- (dest_unavailable). A hold an earlier version's hold step made, still held, is posted (or
-- refunded, when the credit cannot land) by the two-phase functions.
--
-- Locks. A transfer locks two wallets: the payer's and the payee's, in user id order. The lock
-- order of 002 (phase 2: each step in the order of the one wallet it locks) does not cover a step
-- that locks two, so a batch that holds a transfer step first takes every wallet the batch will
-- lock, in user id order, in one statement; its steps then take nothing they wait for. Every
-- transaction still takes the advisory locks first, then wallets in ascending order, so no cycle
-- of waits can form. A batch without transfer steps runs as in 007.

CREATE FUNCTION ledger_transfer(
  p_transfer_id uuid,
  p_source_user_id bigint,
  p_dest_user_id bigint,
  p_amount_minor bigint
) RETURNS ledger_step
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  h holds;
  r hold_refusals;
  s ledger_step;
  w record;
  v_source accounts;
  v_dest accounts;
  v_source_open boolean;
  v_dest_open boolean;
  v_dest_held_out_minor bigint;
BEGIN
  IF p_transfer_id IS NULL OR p_source_user_id IS NULL OR p_dest_user_id IS NULL
     OR p_amount_minor IS NULL OR p_amount_minor NOT BETWEEN 1 AND 9007199254740991 THEN
    RAISE EXCEPTION 'ledger_transfer: invalid input (transfer %, source %, dest %, amount %)',
      p_transfer_id, p_source_user_id, p_dest_user_id, p_amount_minor
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF p_source_user_id = p_dest_user_id THEN
    RETURN ledger_step_of('same_wallet', NULL);
  END IF;

  -- Every copy of this transfer takes this lock before deciding (as ledger_hold does).
  PERFORM ledger_lock_transfer(p_transfer_id);
  SELECT * INTO h FROM holds WHERE transfer_id = p_transfer_id;
  IF FOUND THEN
    IF (h.source_user_id, h.dest_user_id, h.amount_minor)
       IS DISTINCT FROM (p_source_user_id, p_dest_user_id, p_amount_minor) THEN
      RETURN ledger_step_of('hold_mismatch', h);
    END IF;
    IF h.state = 'posted' THEN
      RETURN ledger_step_of('ok', h);
    END IF;
    IF h.state = 'held' THEN
      s := ledger_post(p_transfer_id);
      IF s.result <> 'dest_unavailable' THEN
        RETURN s;
      END IF;
      s := ledger_void(p_transfer_id);
      IF s.result <> 'ok' THEN
        RAISE EXCEPTION 'ledger_transfer: the refund of % answered %', p_transfer_id, s.result;
      END IF;
      SELECT * INTO STRICT h FROM holds WHERE transfer_id = p_transfer_id;
    END IF;
    RETURN ledger_step_of('dest_unavailable', h);
  END IF;
  SELECT * INTO r FROM hold_refusals WHERE transfer_id = p_transfer_id;
  IF FOUND THEN
    IF (r.source_user_id, r.dest_user_id, r.amount_minor)
       = (p_source_user_id, p_dest_user_id, p_amount_minor) THEN
      RETURN ledger_step_of(r.result, NULL);
    END IF;
    RETURN ledger_step_of('hold_mismatch', NULL);
  END IF;

  -- Both wallets, in user id order; then, in a later statement (a new snapshot), who is open.
  FOR w IN SELECT a FROM accounts a WHERE a.user_id IN (p_source_user_id, p_dest_user_id)
           ORDER BY a.user_id FOR UPDATE LOOP
    IF (w.a).user_id = p_source_user_id THEN v_source := w.a; ELSE v_dest := w.a; END IF;
  END LOOP;
  SELECT coalesce(bool_or(u.id = p_source_user_id), false), coalesce(bool_or(u.id = p_dest_user_id), false)
  INTO v_source_open, v_dest_open
  FROM users u WHERE u.id IN (p_source_user_id, p_dest_user_id) AND u.deleted_at IS NULL;
  IF v_dest.id IS NULL OR NOT v_dest_open THEN
    RETURN ledger_refuse_hold('dest_not_found', p_transfer_id, p_source_user_id, p_dest_user_id, p_amount_minor);
  END IF;
  IF v_source.id IS NULL OR NOT v_source_open THEN
    RETURN ledger_refuse_hold('source_not_found', p_transfer_id, p_source_user_id, p_dest_user_id, p_amount_minor);
  END IF;
  IF v_source.balance_minor < p_amount_minor THEN
    RETURN ledger_refuse_hold('insufficient_funds', p_transfer_id, p_source_user_id, p_dest_user_id, p_amount_minor);
  END IF;
  v_dest_held_out_minor := ledger_credit_room(p_dest_user_id, v_dest.balance_minor,
                                              v_dest.held_out_bound_minor, p_amount_minor);
  IF v_dest_held_out_minor IS NULL THEN
    INSERT INTO holds (transfer_id, source_user_id, dest_user_id, amount_minor, state, source_balance_before_minor)
    VALUES (p_transfer_id, p_source_user_id, p_dest_user_id, p_amount_minor, 'voided', v_source.balance_minor)
    RETURNING * INTO h;
    RETURN ledger_step_of('dest_unavailable', h);
  END IF;

  UPDATE accounts SET balance_minor = balance_minor - p_amount_minor, updated_at = now()
  WHERE id = v_source.id;
  UPDATE accounts SET balance_minor = balance_minor + p_amount_minor,
                      held_out_bound_minor = v_dest_held_out_minor, updated_at = now()
  WHERE id = v_dest.id;
  INSERT INTO holds (transfer_id, source_user_id, dest_user_id, amount_minor, state,
                     source_balance_before_minor, dest_balance_before_minor)
  VALUES (p_transfer_id, p_source_user_id, p_dest_user_id, p_amount_minor, 'posted',
          v_source.balance_minor, v_dest.balance_minor)
  RETURNING * INTO h;
  -- The journal of a hold and its post: wallet -> clearing (2), then clearing -> wallet.
  WITH journal AS (
    INSERT INTO postings (kind, transfer_id) VALUES ('hold', p_transfer_id), ('post', p_transfer_id)
    RETURNING postings.id, postings.kind
  )
  INSERT INTO entries (posting_id, account_id, amount_minor, balance_after_minor)
  SELECT j.id, e.account_id, e.amount_minor, e.balance_after_minor
  FROM journal j
  JOIN (VALUES ('hold', 1, v_source.id, -p_amount_minor, v_source.balance_minor - p_amount_minor),
               ('hold', 2, 2::bigint, p_amount_minor, NULL::bigint),
               ('post', 3, 2::bigint, -p_amount_minor, NULL::bigint),
               ('post', 4, v_dest.id, p_amount_minor, v_dest.balance_minor + p_amount_minor))
    AS e(kind, leg, account_id, amount_minor, balance_after_minor) ON e.kind = j.kind
  ORDER BY e.leg;
  RETURN ledger_step_of('ok', h);
END
$$;

-- As in 007, with transfer steps (see the top): they take every wallet of the batch first, and
-- end a run of posts like a hold or a void.
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
  IF EXISTS (SELECT FROM unnest(p_ops) AS o(op)
             WHERE o.op IS NULL OR o.op NOT IN ('hold', 'post', 'void', 'transfer')) THEN
    RAISE EXCEPTION 'ledger_apply_batch: every op must be hold, post, void or transfer'
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

  -- Phase 2a, with transfer steps only: every wallet a step of the batch will lock, in user id
  -- order (see the top). Each hold looked up by its primary key ("Plans", 007).
  IF 'transfer' = ANY (p_ops) THEN
    PERFORM FROM accounts a
    WHERE a.user_id IN (
      SELECT w.user_id
      FROM unnest(p_ops, p_transfer_ids, p_source_user_ids, p_dest_user_ids)
             AS o(op, id, source_user_id, dest_user_id)
      LEFT JOIN LATERAL (SELECT h.dest_user_id, h.source_user_id FROM holds h
                         WHERE h.transfer_id = o.id OFFSET 0) h ON o.op IN ('post', 'void')
      CROSS JOIN LATERAL (VALUES (CASE o.op WHEN 'post' THEN h.dest_user_id
                                            WHEN 'void' THEN h.source_user_id
                                            ELSE o.source_user_id END),
                                 (CASE o.op WHEN 'transfer' THEN o.dest_user_id END)) AS w(user_id)
      WHERE w.user_id IS NOT NULL)
    ORDER BY a.user_id
    FOR UPDATE OF a;
  END IF;

  -- Phase 2: the steps in wallet order, as in 007 (a transfer in its payer's place).
  FOR v_step IN
    SELECT o.i::integer AS i, o.op, o.id, o.source_user_id, o.dest_user_id, o.amount_minor
    FROM unnest(p_ops, p_transfer_ids, p_source_user_ids, p_dest_user_ids, p_amounts_minor)
           WITH ORDINALITY AS o(op, id, source_user_id, dest_user_id, amount_minor, i)
    LEFT JOIN LATERAL (SELECT h.dest_user_id, h.source_user_id FROM holds h
                       WHERE h.transfer_id = o.id OFFSET 0) h ON o.op IN ('post', 'void')
    ORDER BY CASE o.op WHEN 'hold' THEN o.source_user_id
                       WHEN 'transfer' THEN o.source_user_id
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
    ELSIF v_step.op = 'transfer' THEN
      s := ledger_transfer(v_step.id, v_step.source_user_id, v_step.dest_user_id, v_step.amount_minor);
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
