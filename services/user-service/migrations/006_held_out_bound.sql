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
-- Why it stays an upper bound (READ COMMITTED):
-- - It rises with every new hold, in the hold's transaction, by a trigger on holds: every writer
--   of holds (ledger_hold, ledger_fund_batch, any later one) keeps it. The trigger's UPDATE takes
--   the payer's row lock (the writers of 002/003/005 hold it already) and adds to the newest
--   committed bound.
-- - It falls only (a) when a hold is voided (a trigger, under the payer's row lock, which the void
--   holds: it is the refund's credit), by the amount that hold added, and (b) when a credit to the
--   wallet sets it to the exact sum. (b) runs under the wallet's row lock, in a statement after the
--   lock was taken, so its snapshot sees every hold out of the wallet that committed before it
--   (a new hold needs that lock: it waits for us, and its trigger then adds to our figure). A
--   hold it counts as no longer held was posted or voided for good (holds only move forward);
--   one being posted meanwhile is still counted (an overestimate, which is safe).
-- - A post never lowers it: the bound then overstates by the posted amount until (b) runs.
-- So every hold in state 'held' is counted in its payer's bound, and voiding a hold subtracts
-- money the bound holds: the bound never goes below the exact figure (the audit checks:
-- wallets_understating_held_out).
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

-- New holds raise their payer's bound, once per statement (a batch funding's 1,000 holds are one
-- update of its payer's row). One payer per statement in every writer so far; with several, the
-- rows would be locked in the order the join visits them.
CREATE FUNCTION holds_raise_held_out_bound() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE accounts a
  SET held_out_bound_minor = CASE WHEN a.held_out_bound_minor <= 9007199254740991 - n.held_minor
                                  THEN a.held_out_bound_minor + n.held_minor
                                  ELSE ledger_held_out(n.source_user_id) END
  FROM (SELECT source_user_id, sum(amount_minor)::bigint AS held_minor FROM new_holds WHERE state = 'held'
        GROUP BY source_user_id) n
  WHERE a.user_id = n.source_user_id;
  RETURN NULL;
END
$$;
CREATE TRIGGER holds_raise_held_out_bound AFTER INSERT ON holds
  REFERENCING NEW TABLE AS new_holds
  FOR EACH STATEMENT EXECUTE FUNCTION holds_raise_held_out_bound();

-- A void gives the hold's money back to the balance, so it leaves the bound. Row-level with a
-- WHEN, so that posts (the hot path) queue no trigger at all. The bound counts every held hold,
-- so it is never below the amount; were it ever (a bug, which the audit names), the refund still
-- lands rather than failing on the CHECK and aborting its batch.
CREATE FUNCTION holds_lower_held_out_bound() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE accounts SET held_out_bound_minor = greatest(held_out_bound_minor - OLD.amount_minor, 0)
  WHERE user_id = OLD.source_user_id;
  RETURN NULL;
END
$$;
CREATE TRIGGER holds_lower_held_out_bound AFTER UPDATE OF state ON holds
  FOR EACH ROW WHEN (OLD.state = 'held' AND NEW.state = 'voided')
  EXECUTE FUNCTION holds_lower_held_out_bound();

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
