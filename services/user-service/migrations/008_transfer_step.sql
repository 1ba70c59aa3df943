-- user-service: a one-step transfer, so that a lone transfer's debit and credit are one ledger
-- step in one commit instead of two steps (hold, then post) in two commits. The saga used to
-- commit a transition between them (`recorded`) and wait for a second ledger call; that cost a
-- saga commit, a ledger call and a ledger commit per transfer, and a client's POST waited on all
-- of them in turn.
--
-- ledger_transfer(id, source, dest, amount) is ledger_hold followed by ledger_post in the same
-- transaction, so its journal, its holds row and every check are the ones the two steps make
-- (the audit, the deferred triggers and the held-out bound need nothing new):
-- - The hold's refusals (same_wallet, source_not_found, dest_not_found, insufficient_funds,
--   hold_mismatch) are answered as they are, and stay final (hold_refusals, 003).
-- - A credit that cannot land (the payee closed, or no room under 2^53-1) is refunded at once:
--   the hold is voided in the same transaction and the answer is dest_unavailable, with no money
--   moved. A voided hold is final, so a retry answers dest_unavailable again. A refused transfer
--   therefore never leaves money in clearing.
-- - Idempotent by transfer id: a retry finds the hold posted (ok, the first balances), voided
--   (dest_unavailable) or, if a hold step made it earlier, held, and posts it.
--
-- Locks. A transfer locks two wallets: the payer's (the hold) and the payee's (the post). The
-- lock order of 002 (phase 2: each step in the order of the one wallet it locks) does not cover
-- a step that locks two, so a batch that holds a transfer step first takes every wallet the
-- batch will lock, in user id order, in one statement; its steps then take nothing they wait
-- for. Every transaction still takes the advisory locks first, then wallets in ascending order,
-- so no cycle of waits can form. A batch without transfer steps runs as in 007.

CREATE FUNCTION ledger_transfer(
  p_transfer_id uuid,
  p_source_user_id bigint,
  p_dest_user_id bigint,
  p_amount_minor bigint
) RETURNS ledger_step
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  s ledger_step;
  v ledger_step;
BEGIN
  s := ledger_hold(p_transfer_id, p_source_user_id, p_dest_user_id, p_amount_minor);
  IF s.result <> 'ok' OR s.state = 'posted' THEN
    RETURN s;
  END IF;
  IF s.state = 'voided' THEN
    RETURN ROW('dest_unavailable', s.transfer_id, s.source_user_id, s.dest_user_id, s.amount_minor,
               s.state, s.source_balance_before_minor, s.dest_balance_before_minor, s.created_at,
               s.updated_at)::ledger_step;
  END IF;
  s := ledger_post(p_transfer_id);
  IF s.result <> 'dest_unavailable' THEN
    -- ok, or a refusal that a hold found held cannot give (hold_not_found, hold_voided): the
    -- service treats any answer but ok and dest_unavailable as a broken invariant.
    RETURN s;
  END IF;
  v := ledger_void(p_transfer_id);
  IF v.result <> 'ok' THEN
    RAISE EXCEPTION 'ledger_transfer: the refund of % answered %', p_transfer_id, v.result;
  END IF;
  RETURN ROW('dest_unavailable', v.transfer_id, v.source_user_id, v.dest_user_id, v.amount_minor,
             v.state, v.source_balance_before_minor, v.dest_balance_before_minor, v.created_at,
             v.updated_at)::ledger_step;
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
