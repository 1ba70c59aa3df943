-- user-service: the saga's ledger steps (hold, post, void) as server-side functions, so that one
-- step is one round trip instead of seven or eight, and many steps (ledger_apply_batch) share one
-- transaction and one commit.
--
-- The guarantees are those of the TypeScript the functions replace (ledger.ts):
-- - A wallet's row lock is the lock for that user's money. It is taken first (SELECT ... FOR
--   UPDATE), then "is the user still open?" is asked in a later statement, which takes a new
--   snapshot under READ COMMITTED and so sees a close that committed while we waited for the
--   lock (and a close that comes later waits for us, then finds our hold in flight). Funds and
--   the 2^53-1 ceiling are checked under the same lock, and only then is anything written: a
--   refusal returns before the first write, so it changes nothing and needs no savepoint.
-- - A hold's row lock (SELECT ... FOR UPDATE) serialises post and void of one transfer.
-- - Every step is idempotent by transfer id: a retry answers with the hold as it now stands, a
--   hold retried with other parties or amount is refused hold_mismatch.
-- - Every step writes one balanced posting (the deferred triggers of 001 check it at commit).
--
-- Steps answer with a result code ('ok' or the refusal) rather than raising, so that a refusal
-- does not abort the other steps of its batch. They raise only on input that the service
-- validates before calling (a bug), and on engine errors; either aborts the whole transaction.
--
-- Lock order, so that concurrent batches cannot deadlock:
--   1. a transfer-level advisory lock for every transfer of the batch, in the order of the lock
--      key (ledger_transfer_lock_key), which is how the key space is ordered;
--   2. then the steps, in the order of the wallet each one locks (hold: the source's, post: the
--      destination's, void: the source's), then of the transfer id.
-- A transaction waits only on these two kinds, each taken in ascending order, advisory locks all
-- before wallets; so no cycle of waits can form. The other locks a step takes are never waited
-- for: a hold's row lock is only taken under its transfer's advisory lock (held since phase 1),
-- and the key-share locks of the holds' foreign keys on users conflict with no lock anyone takes
-- (closing or renaming a user updates no key column: the username's unique index is on an
-- expression, which a foreign key cannot reference). One step alone follows the same order (a batch of
-- one). Deposits and closes lock a single wallet and then wait for nothing a step holds.
-- (Without phase 1, a batch voiding T after locking wallet 3 and one posting T after locking
-- wallet 5 could each wait for the other; the tests cover both phases.)

-- What a step answers: 'ok' or a refusal code, and the hold as it now stands (all NULL when there
-- is none). The columns after `result` are those of `holds`, in its order, so that a row maps to
-- the same shape as `SELECT * FROM holds`.
CREATE TYPE ledger_step AS (
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
);

CREATE FUNCTION ledger_step_of(p_result text, h holds) RETURNS ledger_step
LANGUAGE sql IMMUTABLE AS $$
  SELECT ROW(p_result, h.transfer_id, h.source_user_id, h.dest_user_id, h.amount_minor, h.state,
             h.source_balance_before_minor, h.dest_balance_before_minor, h.created_at, h.updated_at)::ledger_step
$$;

-- The advisory lock key of a transfer: the second half of a two-key lock whose first half (7274)
-- names this use (the two-key space is distinct from migrate()'s one-key lock). Two transfers
-- may share a key; that only serialises them needlessly, and batches sort by the key, not by
-- the transfer id, so a shared key cannot invert the lock order.
CREATE FUNCTION ledger_transfer_lock_key(p_transfer_id uuid) RETURNS integer
LANGUAGE sql IMMUTABLE STRICT AS $$
  SELECT hashtext(p_transfer_id::text)
$$;

-- Held until the end of the transaction. Taking it again in the same transaction (a batch takes
-- it before its steps, each step takes it again) returns at once.
CREATE FUNCTION ledger_lock_transfer(p_transfer_id uuid) RETURNS void
LANGUAGE sql VOLATILE STRICT AS $$
  SELECT pg_advisory_xact_lock(7274, ledger_transfer_lock_key(p_transfer_id))
$$;

-- One posting, two legs: `amount` from the debited account to the credited one. Balanced by
-- construction; the deferred triggers of 001 check it again at commit. balance_after is the
-- wallet's balance after the leg, NULL for the system accounts.
CREATE FUNCTION ledger_journal(
  p_kind text,
  p_transfer_id uuid,
  p_amount_minor bigint,
  p_debit_account_id bigint,
  p_debit_balance_after_minor bigint,
  p_credit_account_id bigint,
  p_credit_balance_after_minor bigint
) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  v_posting_id bigint;
BEGIN
  INSERT INTO postings (kind, transfer_id) VALUES (p_kind, p_transfer_id) RETURNING id INTO v_posting_id;
  INSERT INTO entries (posting_id, account_id, amount_minor, balance_after_minor)
  VALUES (v_posting_id, p_debit_account_id, -p_amount_minor, p_debit_balance_after_minor),
         (v_posting_id, p_credit_account_id, p_amount_minor, p_credit_balance_after_minor);
END
$$;

-- Hold: source wallet -> clearing (account 2, fixed by 001 and checked at start).
-- Refusals: same_wallet, dest_not_found, source_not_found, insufficient_funds, hold_mismatch.
CREATE FUNCTION ledger_hold(
  p_transfer_id uuid,
  p_source_user_id bigint,
  p_dest_user_id bigint,
  p_amount_minor bigint
) RETURNS ledger_step
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  h holds;
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

  -- Copies of one hold (a saga retrying after a timeout) run one after the other: the second
  -- one's next statement takes a new snapshot, finds the first one's hold and answers with it,
  -- instead of failing on the primary key or on the funds the first one took.
  PERFORM ledger_lock_transfer(p_transfer_id);
  SELECT * INTO h FROM holds WHERE transfer_id = p_transfer_id;
  IF FOUND THEN
    IF (h.source_user_id, h.dest_user_id, h.amount_minor)
       = (p_source_user_id, p_dest_user_id, p_amount_minor) THEN
      RETURN ledger_step_of('ok', h);
    END IF;
    RETURN ledger_step_of('hold_mismatch', h);
  END IF;

  -- The destination is asked without a lock, as before: if it closes after this, the post finds
  -- it closed (dest_unavailable) and the saga voids.
  PERFORM FROM users WHERE id = p_dest_user_id AND deleted_at IS NULL;
  IF NOT FOUND THEN
    RETURN ledger_step_of('dest_not_found', NULL);
  END IF;

  -- The source's money lock, then (a new statement, a new snapshot) whether the source is open.
  SELECT id, balance_minor INTO v_account_id, v_balance_minor
  FROM accounts WHERE user_id = p_source_user_id FOR UPDATE;
  PERFORM FROM users WHERE id = p_source_user_id AND deleted_at IS NULL;
  IF v_account_id IS NULL OR NOT FOUND THEN
    RETURN ledger_step_of('source_not_found', NULL);
  END IF;
  IF v_balance_minor < p_amount_minor THEN
    RETURN ledger_step_of('insufficient_funds', NULL);
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

-- Post: clearing -> destination wallet. Refusals: hold_not_found, hold_voided, dest_unavailable
-- (closed, or the credit would pass 2^53-1; nothing changes, and the saga voids).
CREATE FUNCTION ledger_post(p_transfer_id uuid) RETURNS ledger_step
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

  -- The destination's money lock, then (a new snapshot) whether it is still open.
  SELECT id, balance_minor INTO v_account_id, v_balance_minor
  FROM accounts WHERE user_id = h.dest_user_id FOR UPDATE;
  PERFORM FROM users WHERE id = h.dest_user_id AND deleted_at IS NULL;
  IF v_account_id IS NULL OR NOT FOUND OR v_balance_minor > 9007199254740991 - h.amount_minor THEN
    RETURN ledger_step_of('dest_unavailable', h);
  END IF;

  UPDATE accounts SET balance_minor = balance_minor + h.amount_minor, updated_at = now()
  WHERE id = v_account_id
  RETURNING balance_minor INTO v_balance_after_minor;
  -- The state guard is a second line: under the hold's row lock the state is known to be 'held'.
  UPDATE holds SET state = 'posted', dest_balance_before_minor = v_balance_minor, updated_at = now()
  WHERE transfer_id = p_transfer_id AND state = 'held'
  RETURNING * INTO STRICT h;
  PERFORM ledger_journal('post', p_transfer_id, h.amount_minor,
                         2, NULL, v_account_id, v_balance_after_minor);
  RETURN ledger_step_of('ok', h);
END
$$;

-- Void: clearing -> source wallet (a refund). Refusals: hold_not_found, hold_posted,
-- source_unavailable (only if the source received so much meanwhile that the refund would pass
-- 2^53-1). The source is not asked whether it is open: it cannot be closed while a hold of
-- theirs is held (closeUser refuses transfers_in_flight), and the refund must land regardless.
CREATE FUNCTION ledger_void(p_transfer_id uuid) RETURNS ledger_step
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  h holds;
  v_account_id bigint;
  v_balance_minor bigint;
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

  SELECT id, balance_minor INTO v_account_id, v_balance_minor
  FROM accounts WHERE user_id = h.source_user_id FOR UPDATE;
  IF v_account_id IS NULL OR v_balance_minor > 9007199254740991 - h.amount_minor THEN
    RETURN ledger_step_of('source_unavailable', h);
  END IF;

  UPDATE accounts SET balance_minor = balance_minor + h.amount_minor, updated_at = now()
  WHERE id = v_account_id
  RETURNING balance_minor INTO v_balance_after_minor;
  UPDATE holds SET state = 'voided', updated_at = now()
  WHERE transfer_id = p_transfer_id AND state = 'held'
  RETURNING * INTO STRICT h;
  PERFORM ledger_journal('void', p_transfer_id, h.amount_minor,
                         2, NULL, v_account_id, v_balance_after_minor);
  RETURN ledger_step_of('ok', h);
END
$$;

-- Up to 1000 steps in the caller's transaction (one statement from the service: one round trip,
-- one commit). The service's own limit is lower (LEDGER_BATCH_MAX in ledger.ts); this one only
-- bounds the locks a single call can hold (one advisory lock per transfer in the shared lock table).
-- Arrays are parallel: ops[i] is 'hold', 'post' or 'void'; source, dest and amount are read for
-- holds only. A transfer id may appear once. One row per step, in the order applied; `ordinal` is
-- the step's position in the input, from 1.
CREATE FUNCTION ledger_apply_batch(
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
  -- Two steps of one transfer in one batch would need an order between them that the wallet
  -- order does not give; the service refuses such a batch before calling.
  IF (SELECT count(DISTINCT t.id) FROM unnest(p_transfer_ids) AS t(id)) <> v_count
     OR array_position(p_transfer_ids, NULL) IS NOT NULL THEN
    RAISE EXCEPTION 'ledger_apply_batch: every transfer id must be given, once'
      USING ERRCODE = 'invalid_parameter_value';
  END IF;

  -- Phase 1: the transfers' advisory locks, in key order (see the lock order at the top).
  FOR v_key IN
    SELECT DISTINCT ledger_transfer_lock_key(t.id) AS k FROM unnest(p_transfer_ids) AS t(id) ORDER BY k
  LOOP
    PERFORM pg_advisory_xact_lock(7274, v_key);
  END LOOP;

  -- Phase 2: the steps in wallet order. Read after phase 1, the holds cannot change under us in
  -- a way that matters here: a hold of one of our transfers can only be created, posted or
  -- voided by whoever holds its advisory lock (us), and its parties never change.
  FOR v_step IN
    SELECT o.i::integer AS i, o.op, o.id, o.source_user_id, o.dest_user_id, o.amount_minor
    FROM unnest(p_ops, p_transfer_ids, p_source_user_ids, p_dest_user_ids, p_amounts_minor)
           WITH ORDINALITY AS o(op, id, source_user_id, dest_user_id, amount_minor, i)
    LEFT JOIN holds h ON h.transfer_id = o.id AND o.op <> 'hold'
    -- NULL (post or void of a missing hold) locks no wallet, so any place does.
    ORDER BY CASE o.op WHEN 'hold' THEN o.source_user_id
                       WHEN 'post' THEN h.dest_user_id
                       ELSE h.source_user_id END NULLS FIRST,
             o.id
  LOOP
    IF v_step.op = 'hold' THEN
      s := ledger_hold(v_step.id, v_step.source_user_id, v_step.dest_user_id, v_step.amount_minor);
    ELSIF v_step.op = 'post' THEN
      s := ledger_post(v_step.id);
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
END
$$;
