-- user-service: the transfer steps of one ledger_apply_batch call in one pass, as 007 did for
-- posts. Under load a call carries 15-20 lone transfers, and each was a ledger_transfer of about
-- ten statements (the hold and refusal lookups, the wallets' row locks, who is open, two wallet
-- updates, the hold row, the journal): the statements, not the rows, were the ledger's cost per
-- transfer.
--
-- What must not change: a run of transfers applied here answers, moves, and journals exactly what
-- ledger_transfer applied one by one in the run's order (the call's lock order) would have: the
-- same answers, balances, bounds, hold rows with the same balances before, the same postings and
-- entries in the same id order, with the same running balances. A test runs the same calls on a
-- schema migrated up to 008 and on this one and compares every row.
--
-- When one pass is exact. ledger_transfer refuses or differs from the plain case only for a copy
-- (a hold or a refusal already there), the payer as payee, a party without an open wallet, a
-- payer short of the amount, or a credit without room under 2^53-1. A run takes the one pass
-- only when none of that can happen to any of its steps whatever their order:
-- - no hold and no refusal exists for any of its transfer ids (each read by primary key, "Plans"
--   in 007), and no step pays its own payer;
-- - every party has a wallet and is open (asked after the wallets' locks, in a new snapshot);
-- - every payer's balance covers the sum of everything the run debits from it: a step's balance
--   before is the balance plus the run's earlier credits less its earlier debits, so it is at
--   least the balance less the earlier debits, which covers the step's own;
-- - every payee's balance + held-out bound + the sum of everything the run credits to it fits
--   2^53-1: a step's balance before is at most the balance plus the earlier credits, so
--   ledger_credit_room keeps every bound as it is, as here.
-- Otherwise the whole run goes through ledger_transfer step by step, which decides as before.
-- A run of fewer than six steps goes step by step (see the function).
--
-- Locks. A run is called from ledger_apply_batch after its phase 1 (every transfer's advisory
-- lock) and phase 2a (every wallet of the call, in user id order), so it takes no lock of its
-- own and waits for nothing: the call's lock order is that of 008.
--
-- The journal: per step a 'hold' posting (wallet -> clearing) then a 'post' posting (clearing ->
-- wallet), four entries in the order ledger_transfer writes them, steps in the run's order; each
-- wallet's balance after an entry is its balance under the lock plus the run's earlier legs on it.

CREATE FUNCTION ledger_transfer_run(
  p_transfer_ids uuid[],
  p_ordinals integer[],
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
  v_count integer := coalesce(cardinality(p_transfer_ids), 0);
  v_one_pass boolean;
  v_answered integer;
  v_answer ledger_step;
BEGIN
  IF coalesce(cardinality(p_ordinals), 0) <> v_count
     OR coalesce(cardinality(p_source_user_ids), 0) <> v_count
     OR coalesce(cardinality(p_dest_user_ids), 0) <> v_count
     OR coalesce(cardinality(p_amounts_minor), 0) <> v_count THEN
    RAISE EXCEPTION 'ledger_transfer_run: give arrays of one length' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF v_count = 0 THEN
    RETURN;
  END IF;
  -- A short run costs less step by step: the one pass's check and statement cost about as much as
  -- five ledger_transfer calls (measured: backend CPU per transfer, 2 steps 567 against 658 µs,
  -- 20 steps 253 against 178).
  IF v_count >= 6 THEN
    v_one_pass := ledger_transfer_run_is_plain(p_transfer_ids, p_source_user_ids, p_dest_user_ids, p_amounts_minor);
  END IF;
  IF NOT coalesce(v_one_pass, false) THEN
    FOR v_i IN 1 .. v_count LOOP
      v_answer := ledger_transfer(p_transfer_ids[v_i], p_source_user_ids[v_i], p_dest_user_ids[v_i],
                                  p_amounts_minor[v_i]);
      RETURN QUERY SELECT p_ordinals[v_i], (v_answer).*;
    END LOOP;
    RETURN;
  END IF;

  RETURN QUERY
  WITH steps AS (
    SELECT o.pos, o.id, o.source_user_id AS source, o.dest_user_id AS dest, o.amount_minor AS amount
    FROM unnest(p_transfer_ids, p_source_user_ids, p_dest_user_ids, p_amounts_minor)
           WITH ORDINALITY AS o(id, source_user_id, dest_user_id, amount_minor, pos)
  ), legs AS (
    -- Each step's two wallet legs in ledger_transfer's order (the payer's, then the payee's), with
    -- the wallet's balance before the leg.
    SELECT l.pos, l.leg, a.id AS account_id, l.delta,
           a.balance_minor + coalesce(sum(l.delta) OVER (
             PARTITION BY a.id ORDER BY l.pos, l.leg ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS before
    FROM (SELECT s.pos, 1 AS leg, s.source AS user_id, -s.amount AS delta FROM steps s
          UNION ALL
          SELECT s.pos, 2, s.dest, s.amount FROM steps s) l
    JOIN accounts a ON a.user_id = l.user_id
  ), moved AS (
    UPDATE accounts a SET balance_minor = a.balance_minor + t.total, updated_at = now()
    FROM (SELECT l.account_id, sum(l.delta)::bigint AS total FROM legs l GROUP BY l.account_id) t
    WHERE a.id = t.account_id
  ), paired AS (
    SELECT s.pos, s.id, s.source, s.dest, s.amount,
           d.account_id AS source_account_id, d.before AS source_before,
           c.account_id AS dest_account_id, c.before AS dest_before
    FROM steps s
    JOIN legs d ON d.pos = s.pos AND d.leg = 1
    JOIN legs c ON c.pos = s.pos AND c.leg = 2
  ), held AS (
    INSERT INTO holds (transfer_id, source_user_id, dest_user_id, amount_minor, state,
                       source_balance_before_minor, dest_balance_before_minor)
    SELECT p.id, p.source, p.dest, p.amount, 'posted', p.source_before, p.dest_before
    FROM paired p ORDER BY p.pos
    RETURNING holds.*
  ), journal AS (
    INSERT INTO postings (kind, transfer_id)
    SELECT k.kind, p.id FROM paired p CROSS JOIN (VALUES (1, 'hold'), (2, 'post')) AS k(n, kind)
    ORDER BY p.pos, k.n
    RETURNING postings.id, postings.kind, postings.transfer_id
  ), journaled AS (
    INSERT INTO entries (posting_id, account_id, amount_minor, balance_after_minor)
    SELECT j.id, e.account_id, e.amount, e.balance_after
    FROM journal j JOIN paired p ON p.id = j.transfer_id
    CROSS JOIN LATERAL (VALUES ('hold', 1, p.source_account_id, -p.amount, p.source_before - p.amount),
                               ('hold', 2, 2::bigint, p.amount, NULL::bigint),
                               ('post', 3, 2::bigint, -p.amount, NULL::bigint),
                               ('post', 4, p.dest_account_id, p.amount, p.dest_before + p.amount))
      AS e(kind, leg, account_id, amount, balance_after)
    WHERE e.kind = j.kind
    ORDER BY j.id, e.leg
  )
  SELECT p_ordinals[p.pos::integer], 'ok'::text, h.transfer_id, h.source_user_id, h.dest_user_id,
         h.amount_minor, h.state, h.source_balance_before_minor, h.dest_balance_before_minor,
         h.created_at, h.updated_at
  FROM held h JOIN paired p ON p.id = h.transfer_id
  ORDER BY p.pos;
  GET DIAGNOSTICS v_answered = ROW_COUNT;
  IF v_answered <> v_count THEN
    RAISE EXCEPTION 'ledger_transfer_run: % steps, % holds written', v_count, v_answered;
  END IF;
END
$$;

-- Whether a run of transfer steps can take the one pass (see the top): no copy, no payer as payee,
-- every party open with a wallet, every payer covering its run's debits, every payee with room for
-- its run's credits. Read after the wallets' locks, so the balances are those the steps will see.
-- PL/pgSQL rather than SQL so that its plan is kept for the session (see "Plans" below).
CREATE FUNCTION ledger_transfer_run_is_plain(
  p_transfer_ids uuid[],
  p_source_user_ids bigint[],
  p_dest_user_ids bigint[],
  p_amounts_minor bigint[]
) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
  RETURN (
  WITH legs AS (
    SELECT o.source_user_id AS user_id, o.amount_minor::numeric AS debit, 0::numeric AS credit
    FROM unnest(p_source_user_ids, p_amounts_minor) AS o(source_user_id, amount_minor)
    UNION ALL
    SELECT o.dest_user_id, 0, o.amount_minor FROM unnest(p_dest_user_ids, p_amounts_minor) AS o(dest_user_id, amount_minor)
  ), parties AS (
    SELECT l.user_id, sum(l.debit) AS debits, sum(l.credit) AS credits FROM legs l GROUP BY l.user_id
  )
  SELECT NOT EXISTS (SELECT FROM unnest(p_transfer_ids) AS o(id)
                     CROSS JOIN LATERAL (SELECT FROM holds h WHERE h.transfer_id = o.id OFFSET 0) x)
     AND NOT EXISTS (SELECT FROM unnest(p_transfer_ids) AS o(id)
                     CROSS JOIN LATERAL (SELECT FROM hold_refusals r WHERE r.transfer_id = o.id OFFSET 0) x)
     AND NOT EXISTS (SELECT FROM unnest(p_source_user_ids, p_dest_user_ids) AS o(source, dest)
                     WHERE o.source = o.dest)
     AND NOT EXISTS (
       SELECT FROM parties p
       LEFT JOIN accounts a ON a.user_id = p.user_id
       LEFT JOIN users u ON u.id = p.user_id AND u.deleted_at IS NULL
       WHERE a.id IS NULL OR u.id IS NULL
          OR a.balance_minor < p.debits
          OR a.balance_minor::numeric + a.held_out_bound_minor + p.credits > 9007199254740991));
END
$$;

-- As in 008, with the transfer steps gathered into runs as the posts are (007): a run ends at the
-- next step of another kind, which is applied after it, in its place in the lock order.
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
  v_moves_ids uuid[] := '{}';
  v_moves_ordinals integer[] := '{}';
  v_moves_sources bigint[] := '{}';
  v_moves_dests bigint[] := '{}';
  v_moves_amounts bigint[] := '{}';
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
    -- A run of posts ends at any other step, a run of transfers at any step but a transfer.
    IF v_step.op <> 'post' AND cardinality(v_run_ids) > 0 THEN
      RETURN QUERY SELECT * FROM ledger_post_run(v_run_ids, v_run_ordinals);
      v_run_ids := '{}';
      v_run_ordinals := '{}';
    END IF;
    IF v_step.op <> 'transfer' AND cardinality(v_moves_ids) > 0 THEN
      RETURN QUERY SELECT * FROM ledger_transfer_run(v_moves_ids, v_moves_ordinals, v_moves_sources,
                                                     v_moves_dests, v_moves_amounts);
      v_moves_ids := '{}';
      v_moves_ordinals := '{}';
      v_moves_sources := '{}';
      v_moves_dests := '{}';
      v_moves_amounts := '{}';
    END IF;
    IF v_step.op = 'post' THEN
      v_run_ids := v_run_ids || v_step.id;
      v_run_ordinals := v_run_ordinals || v_step.i;
    ELSIF v_step.op = 'transfer' THEN
      v_moves_ids := v_moves_ids || v_step.id;
      v_moves_ordinals := v_moves_ordinals || v_step.i;
      v_moves_sources := v_moves_sources || v_step.source_user_id;
      v_moves_dests := v_moves_dests || v_step.dest_user_id;
      v_moves_amounts := v_moves_amounts || v_step.amount_minor;
    ELSE
      IF v_step.op = 'hold' THEN
        s := ledger_hold(v_step.id, v_step.source_user_id, v_step.dest_user_id, v_step.amount_minor);
      ELSE
        s := ledger_void(v_step.id);
      END IF;
      RETURN QUERY SELECT v_step.i, (s).*;
    END IF;
  END LOOP;
  RETURN QUERY SELECT * FROM ledger_post_run(v_run_ids, v_run_ordinals);
  RETURN QUERY SELECT * FROM ledger_transfer_run(v_moves_ids, v_moves_ordinals, v_moves_sources,
                                                 v_moves_dests, v_moves_amounts);
END
$$;
