-- user-service: two holes in the saga's ledger steps (002), closed.
--
-- 1. A refused hold is final for its transfer id, as a failed id is in TigerBeetle. Before, a
--    refusal wrote nothing, so a later copy of the same hold (a slow batch still waiting for a
--    lock, the session of a killed user-service that PostgreSQL is still running, a sweep retry)
--    could find money that arrived meanwhile and debit a transfer the saga had already ended
--    FAILED: the money would sit in clearing with nobody to post or void it. Now the refusal is
--    written in the same transaction as the answer (hold_refusals), and every hold asks for it
--    first, under the transfer's advisory lock, which all copies of one hold take: whichever
--    copy decides first, the others answer as it did.
--
-- 2. A refund always fits. Before, a void was refused (source_unavailable) when the refund
--    would take the payer past 2^53-1, which stranded the money in clearing for good. Now every
--    credit that could grow a wallet (a deposit, a post) counts the money held out of that wallet
--    as if it were still there: balance + held out <= 2^53-1. A hold moves money from the balance
--    to held out, a void moves it back, a post only lowers the payer's held out: none of them can
--    break the rule, so the refund of any hold fits by construction. The count is taken under the
--    wallet's row lock; a new hold out of the wallet needs that lock, and holds that settle
--    meanwhile only lower it, so it is never an underestimate.

-- The refusals a transfer's hold got, kept forever (like the journal).
CREATE TABLE hold_refusals (
  transfer_id uuid PRIMARY KEY,
  source_user_id bigint NOT NULL,
  dest_user_id bigint NOT NULL,
  amount_minor bigint NOT NULL CHECK (amount_minor > 0 AND amount_minor <= 9007199254740991),
  result text NOT NULL CHECK (result IN ('insufficient_funds', 'source_not_found', 'dest_not_found')),
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER hold_refusals_append_only BEFORE UPDATE OR DELETE ON hold_refusals
  FOR EACH ROW EXECUTE FUNCTION ledger_forbid_change();
CREATE TRIGGER hold_refusals_no_truncate BEFORE TRUNCATE ON hold_refusals
  FOR EACH STATEMENT EXECUTE FUNCTION ledger_forbid_change();

-- Money held out of a user's wallet: holds they are the source of that are neither posted nor
-- voided (served by the partial index holds_held_by_source of 001).
CREATE FUNCTION ledger_held_out(p_user_id bigint) RETURNS bigint
LANGUAGE sql STABLE STRICT AS $$
  SELECT coalesce(sum(amount_minor), 0)::bigint FROM holds WHERE source_user_id = p_user_id AND state = 'held'
$$;

-- A refusal to remember, answered as the step's result.
CREATE FUNCTION ledger_refuse_hold(
  p_result text,
  p_transfer_id uuid,
  p_source_user_id bigint,
  p_dest_user_id bigint,
  p_amount_minor bigint
) RETURNS ledger_step
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
  INSERT INTO hold_refusals (transfer_id, source_user_id, dest_user_id, amount_minor, result)
  VALUES (p_transfer_id, p_source_user_id, p_dest_user_id, p_amount_minor, p_result);
  RETURN ledger_step_of(p_result, NULL);
END
$$;

-- Hold: as in 002, plus the refusal memory. A refused id answers its first refusal for ever
-- (hold_mismatch when asked with other parties or amount). Refusals: same_wallet,
-- dest_not_found, source_not_found, insufficient_funds, hold_mismatch.
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

  UPDATE accounts SET balance_minor = balance_minor - p_amount_minor, updated_at = now()
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

-- Post: as in 002, but the credit must leave room for the payee's own holds to come back
-- (balance + held out + amount <= 2^53-1). Refusals: hold_not_found, hold_voided,
-- dest_unavailable (closed, or no room; nothing changes, and the saga voids).
CREATE OR REPLACE FUNCTION ledger_post(p_transfer_id uuid) RETURNS ledger_step
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  h holds;
  v_account_id bigint;
  v_balance_minor bigint;
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

  SELECT id, balance_minor INTO v_account_id, v_balance_minor
  FROM accounts WHERE user_id = h.dest_user_id FOR UPDATE;
  PERFORM FROM users WHERE id = h.dest_user_id AND deleted_at IS NULL;
  IF v_account_id IS NULL OR NOT FOUND
     OR v_balance_minor::numeric + ledger_held_out(h.dest_user_id) + h.amount_minor > 9007199254740991 THEN
    RETURN ledger_step_of('dest_unavailable', h);
  END IF;

  UPDATE accounts SET balance_minor = balance_minor + h.amount_minor, updated_at = now()
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

-- Void: clearing -> source wallet (a refund), never refused for room: the money was the
-- payer's, and every credit since left room for it (see 2. above). Refusals: hold_not_found,
-- hold_posted. The source is not asked whether it is open: it cannot be closed while a hold of
-- theirs is held (closeUser refuses transfers_in_flight), and the refund must land regardless.
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

  UPDATE accounts SET balance_minor = balance_minor + h.amount_minor, updated_at = now()
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
