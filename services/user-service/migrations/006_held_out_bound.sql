-- user-service: the refund-room rule of 003 (a credit must leave room for the payee's own holds
-- to come back: balance + held out + amount <= 2^53-1) without summing the payee's holds on
-- every credit. In a payout workload a payee is often a payer with a batch of 1,000 items held,
-- and ledger_held_out summed them all on every post to them (about 1 ms a credit).
--
-- Each wallet now keeps held_out_bound_minor, an upper bound of the money held out of it. A
-- credit that fits with the bound fits with the exact figure (bound >= held out), so it needs no
-- sum; only a credit that does not fit with the bound (a wallet near 2^53-1) sums the holds, and
-- is refused exactly as before. Every decision is the one 003 made: the bound only skips sums.
--
-- Why a bound per wallet, and not the clearing account's balance (also >= what is held out of any
-- one wallet): clearing's balance is not stored (001: it would be one row every step of every
-- transfer updates), and summing its entries grows with the whole journal.
--
-- Why a bound and not the exact figure: a post lowers the payer's held out but holds only the
-- payee's row lock. Keeping an exact figure would make every post also lock and update the
-- payer's row: the items of one batch would queue on their payer, and the post would take two
-- wallet locks, outside the lock order of 002. So a post leaves the payer's bound alone (it stays
-- an upper bound), and the bound is brought back to the exact figure whenever that figure is
-- computed under the wallet's lock (a post or deposit to a wallet near the ceiling).
--
-- Where it is kept: in the very UPDATE of the payer's row that moves the balance, in every
-- writer of holds and their refunds: ledger_hold and ledger_fund_batch raise it, ledger_void
-- lowers it (all replaced below). A function that writes holds or voids them must do the same;
-- the audit counts the wallets it would leave understated (wallets_understating_held_out), and
-- refund-room.test.ts checks each writer. (Triggers on holds would keep it for any writer, but
-- cost a second update of the payer's row per hold statement: measured, 70 us (a third) more per
-- hold when a batch holds many transfers of one payer.)
--
-- Why it stays an upper bound (READ COMMITTED):
-- - It rises with every new hold, in the hold's transaction, in the statement that debits the
--   payer under the payer's row lock (held from the SELECT ... FOR UPDATE before the checks).
-- - It falls only (a) when a hold is voided, by that hold's amount, under the payer's row lock
--   (the void credits the payer: its UPDATE takes the lock), and (b) when a credit to the wallet
--   sets it to the exact sum. (b) runs under the wallet's row lock, in a statement after the
--   lock was taken, so its snapshot sees every hold out of the wallet that committed before it:
--   a new hold out of the wallet needs that lock, so it either committed before (and is seen) or
--   waits for us (and adds to the figure we write). A hold it counts as no longer held was posted
--   or voided for good (holds only move forward); one being posted meanwhile is still counted
--   (an overestimate, which is safe).
-- - A post never lowers it: the bound then overstates by the posted amount until (b) runs.
-- So every hold in state 'held' is counted in its payer's bound, and voiding a hold subtracts
-- money the bound holds: the bound never goes below the exact figure. The bound read by a
-- credit is that of the row it locked, so no hold can be added to it meanwhile.
-- It cannot run away either: a rise that would pass 2^53-1 takes the exact sum instead, which
-- 003's rule keeps within 2^53-1 - balance.

ALTER TABLE accounts ADD COLUMN held_out_bound_minor bigint NOT NULL DEFAULT 0
  CHECK (held_out_bound_minor >= 0 AND held_out_bound_minor <= 9007199254740991);
-- The exact figure to start from. migrate() runs in one transaction and ALTER TABLE holds the
-- accounts table's strongest lock until its commit, so no step moves money meanwhile.
UPDATE accounts a SET held_out_bound_minor = h.held_minor
FROM (SELECT source_user_id, sum(amount_minor)::bigint AS held_minor FROM holds WHERE state = 'held'
      GROUP BY source_user_id) h
WHERE a.user_id = h.source_user_id;

-- Room for a credit of p_amount_minor to a wallet whose row lock the caller holds, given the
-- balance and bound it read under that lock: the held-out figure to keep as the new bound (the
-- bound itself when it shows room, else the exact sum), or NULL when there is no room. The sum
-- runs only when the bound shows no room; called from a statement after the lock was taken, so it
-- sees every hold out of the wallet.
CREATE FUNCTION ledger_credit_room(
  p_user_id bigint,
  p_balance_minor bigint,
  p_held_out_bound_minor bigint,
  p_amount_minor bigint
) RETURNS bigint
LANGUAGE plpgsql STABLE STRICT AS $$
DECLARE
  v_held_out_minor bigint;
BEGIN
  IF p_balance_minor::numeric + p_held_out_bound_minor + p_amount_minor <= 9007199254740991 THEN
    RETURN p_held_out_bound_minor;
  END IF;
  v_held_out_minor := ledger_held_out(p_user_id);
  IF p_balance_minor::numeric + v_held_out_minor + p_amount_minor <= 9007199254740991 THEN
    RETURN v_held_out_minor;
  END IF;
  RETURN NULL;
END
$$;

-- Post: as in 003, with the room asked of ledger_credit_room. Refusals: hold_not_found,
-- hold_voided, dest_unavailable (closed, or no room; nothing changes, and the saga voids).
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
  UPDATE holds SET state = 'posted', dest_balance_before_minor = v_balance_minor, updated_at = now()
  WHERE transfer_id = p_transfer_id AND state = 'held'
  RETURNING * INTO STRICT h;
  PERFORM ledger_journal('post', p_transfer_id, h.amount_minor,
                         2, NULL, v_account_id, v_balance_after_minor);
  RETURN ledger_step_of('ok', h);
END
$$;

-- Hold: as in 003, and the payer's bound rises with the balance's fall.
CREATE OR REPLACE FUNCTION ledger_hold(
  p_transfer_id uuid,
  p_source_user_id bigint,
  p_dest_user_id bigint,
  p_amount_minor bigint
) RETURNS ledger_step
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  h holds;
  r hold_refusals;
  v_account_id bigint;
  v_balance_minor bigint;
  v_balance_after_minor bigint;
BEGIN
  IF p_transfer_id IS NULL OR p_source_user_id IS NULL OR p_dest_user_id IS NULL
     OR p_amount_minor IS NULL OR p_amount_minor NOT BETWEEN 1 AND 9007199254740991 THEN
    RAISE EXCEPTION 'ledger_hold: invalid input (transfer %, source %, dest %, amount %)',
      p_transfer_id, p_source_user_id, p_dest_user_id, p_amount_minor
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF p_source_user_id = p_dest_user_id THEN
    RETURN ledger_step_of('same_wallet', NULL);
  END IF;

  -- Every copy of this hold takes this lock before deciding, so the first decision (a hold or a
  -- refusal) is committed or rolled back before the next copy reads it.
  PERFORM ledger_lock_transfer(p_transfer_id);
  SELECT * INTO h FROM holds WHERE transfer_id = p_transfer_id;
  IF FOUND THEN
    IF (h.source_user_id, h.dest_user_id, h.amount_minor)
       = (p_source_user_id, p_dest_user_id, p_amount_minor) THEN
      RETURN ledger_step_of('ok', h);
    END IF;
    RETURN ledger_step_of('hold_mismatch', h);
  END IF;
  SELECT * INTO r FROM hold_refusals WHERE transfer_id = p_transfer_id;
  IF FOUND THEN
    IF (r.source_user_id, r.dest_user_id, r.amount_minor)
       = (p_source_user_id, p_dest_user_id, p_amount_minor) THEN
      RETURN ledger_step_of(r.result, NULL);
    END IF;
    RETURN ledger_step_of('hold_mismatch', NULL);
  END IF;

  PERFORM FROM users WHERE id = p_dest_user_id AND deleted_at IS NULL;
  IF NOT FOUND THEN
    RETURN ledger_refuse_hold('dest_not_found', p_transfer_id, p_source_user_id, p_dest_user_id, p_amount_minor);
  END IF;

  SELECT id, balance_minor INTO v_account_id, v_balance_minor
  FROM accounts WHERE user_id = p_source_user_id FOR UPDATE;
  PERFORM FROM users WHERE id = p_source_user_id AND deleted_at IS NULL;
  IF v_account_id IS NULL OR NOT FOUND THEN
    RETURN ledger_refuse_hold('source_not_found', p_transfer_id, p_source_user_id, p_dest_user_id, p_amount_minor);
  END IF;
  IF v_balance_minor < p_amount_minor THEN
    RETURN ledger_refuse_hold('insufficient_funds', p_transfer_id, p_source_user_id, p_dest_user_id, p_amount_minor);
  END IF;

  -- The bound rises in the statement that takes the money (see the top; past 2^53-1 it is made
  -- exact: the holds so far plus this one).
  UPDATE accounts SET balance_minor = balance_minor - p_amount_minor,
    held_out_bound_minor = CASE WHEN held_out_bound_minor <= 9007199254740991 - p_amount_minor
                                THEN held_out_bound_minor + p_amount_minor
                                ELSE ledger_held_out(p_source_user_id) + p_amount_minor END,
    updated_at = now()
  WHERE id = v_account_id
  RETURNING balance_minor INTO v_balance_after_minor;
  INSERT INTO holds (transfer_id, source_user_id, dest_user_id, amount_minor, state, source_balance_before_minor)
  VALUES (p_transfer_id, p_source_user_id, p_dest_user_id, p_amount_minor, 'held', v_balance_minor)
  RETURNING * INTO h;
  PERFORM ledger_journal('hold', p_transfer_id, p_amount_minor,
                         v_account_id, v_balance_after_minor, 2, NULL);
  RETURN ledger_step_of('ok', h);
END
$$;

-- Void: as in 003, and the payer's bound falls with the refund.
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
  UPDATE holds SET state = 'voided', updated_at = now()
  WHERE transfer_id = p_transfer_id AND state = 'held'
  RETURNING * INTO STRICT h;
  PERFORM ledger_journal('void', p_transfer_id, h.amount_minor,
                         2, NULL, v_account_id, v_balance_after_minor);
  RETURN ledger_step_of('ok', h);
END
$$;

-- Batch funding: as in 005, and the payer's bound rises by the batch's total.
CREATE OR REPLACE FUNCTION ledger_fund_batch(
  p_disbursement_id uuid,
  p_source_user_id bigint,
  p_transfer_ids uuid[],
  p_dest_user_ids bigint[],
  p_amounts_minor bigint[]
) RETURNS TABLE (ordinal integer, transfer_id uuid, result text, source_balance_before_minor bigint)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  v_count integer := coalesce(cardinality(p_transfer_ids), 0);
  v_total numeric;
  f batch_fundings;
  v_account_id bigint;
  v_balance_minor bigint;
  v_held_minor bigint;
BEGIN
  IF p_disbursement_id IS NULL OR p_source_user_id IS NULL OR v_count NOT BETWEEN 1 AND 1000
     OR coalesce(cardinality(p_dest_user_ids), 0) <> v_count
     OR coalesce(cardinality(p_amounts_minor), 0) <> v_count
     OR array_position(p_transfer_ids, NULL) IS NOT NULL
     OR array_position(p_dest_user_ids, NULL) IS NOT NULL
     OR (SELECT count(DISTINCT t.id) FROM unnest(p_transfer_ids) AS t(id)) <> v_count
     OR EXISTS (SELECT FROM unnest(p_amounts_minor) AS a(v) WHERE a.v IS NULL OR a.v NOT BETWEEN 1 AND 9007199254740991)
     OR p_source_user_id = ANY (p_dest_user_ids) THEN
    RAISE EXCEPTION 'ledger_fund_batch: invalid input for disbursement %', p_disbursement_id
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  SELECT sum(a.v) INTO v_total FROM unnest(p_amounts_minor) AS a(v);
  IF v_total > 9007199254740991 THEN
    RAISE EXCEPTION 'ledger_fund_batch: total % passes 2^53-1', v_total USING ERRCODE = 'invalid_parameter_value';
  END IF;

  PERFORM ledger_lock_transfer(p_disbursement_id);
  SELECT * INTO f FROM batch_fundings WHERE disbursement_id = p_disbursement_id;
  IF FOUND THEN
    IF (f.source_user_id, f.item_count, f.total_minor) <> (p_source_user_id, v_count, v_total::bigint) THEN
      RETURN QUERY SELECT o.i::integer, o.id, 'funding_mismatch'::text, NULL::bigint
        FROM unnest(p_transfer_ids) WITH ORDINALITY AS o(id, i) ORDER BY o.i;
      RETURN;
    END IF;
    RETURN QUERY SELECT * FROM ledger_batch_answer(f, p_transfer_ids);
    RETURN;
  END IF;

  -- The payer's money lock, then (a new statement, a new snapshot) whether the payer is open.
  SELECT id, balance_minor INTO v_account_id, v_balance_minor
  FROM accounts WHERE user_id = p_source_user_id FOR UPDATE;
  PERFORM FROM users WHERE id = p_source_user_id AND deleted_at IS NULL;
  IF v_account_id IS NULL OR NOT FOUND OR v_balance_minor < v_total THEN
    INSERT INTO batch_fundings (disbursement_id, source_user_id, item_count, total_minor, result)
    VALUES (p_disbursement_id, p_source_user_id, v_count, v_total::bigint,
            CASE WHEN v_account_id IS NULL OR NOT FOUND THEN 'source_not_found' ELSE 'insufficient_funds' END)
    RETURNING * INTO f;
    RETURN QUERY SELECT * FROM ledger_batch_answer(f, p_transfer_ids);
    RETURN;
  END IF;

  -- Items whose payee is not live: remembered refusals, never held.
  INSERT INTO hold_refusals (transfer_id, source_user_id, dest_user_id, amount_minor, result)
  SELECT o.id, p_source_user_id, o.dest, o.amount, 'dest_not_found'
  FROM unnest(p_transfer_ids, p_dest_user_ids, p_amounts_minor) AS o(id, dest, amount)
  WHERE NOT EXISTS (SELECT FROM users u WHERE u.id = o.dest AND u.deleted_at IS NULL);

  -- The holds, each with the payer's balance before it (the running total of the earlier held
  -- items), and each with its own posting (wallet -> clearing), as a single hold journals it:
  -- one statement for the whole batch.
  WITH items AS (
    SELECT o.id, o.dest, o.amount,
           v_balance_minor - coalesce(sum(o.amount) OVER (ORDER BY o.i ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS before
    FROM unnest(p_transfer_ids, p_dest_user_ids, p_amounts_minor) WITH ORDINALITY AS o(id, dest, amount, i)
    WHERE NOT EXISTS (SELECT FROM hold_refusals r WHERE r.transfer_id = o.id)
  ), held AS (
    INSERT INTO holds (transfer_id, source_user_id, dest_user_id, amount_minor, state, source_balance_before_minor)
    SELECT id, p_source_user_id, dest, amount, 'held', before FROM items
    RETURNING holds.transfer_id, holds.amount_minor, holds.source_balance_before_minor
  ), posted AS (
    INSERT INTO postings (kind, transfer_id) SELECT 'hold', held.transfer_id FROM held
    RETURNING postings.id, postings.transfer_id
  ), journaled AS (
    INSERT INTO entries (posting_id, account_id, amount_minor, balance_after_minor)
    SELECT p.id, x.account_id, x.amount, x.balance_after
    FROM posted p JOIN held h ON h.transfer_id = p.transfer_id,
         LATERAL (VALUES (v_account_id, -h.amount_minor, h.source_balance_before_minor - h.amount_minor),
                         (2::bigint, h.amount_minor, NULL::bigint)) AS x(account_id, amount, balance_after)
  )
  SELECT coalesce(sum(held.amount_minor), 0)::bigint INTO v_held_minor FROM held;

  -- The bound rises by the batch's total in the statement that takes the money (past 2^53-1 it is
  -- made exact: the holds just written are counted).
  UPDATE accounts SET balance_minor = balance_minor - v_held_minor,
    held_out_bound_minor = CASE WHEN held_out_bound_minor <= 9007199254740991 - v_held_minor
                                THEN held_out_bound_minor + v_held_minor
                                ELSE ledger_held_out(p_source_user_id) END,
    updated_at = now()
  WHERE id = v_account_id;
  INSERT INTO batch_fundings (disbursement_id, source_user_id, item_count, total_minor, result,
                              source_balance_before_minor)
  VALUES (p_disbursement_id, p_source_user_id, v_count, v_total::bigint, 'ok', v_balance_minor)
  RETURNING * INTO f;
  RETURN QUERY SELECT * FROM ledger_batch_answer(f, p_transfer_ids);
END
$$;
