-- user-service: batch funding. A disbursement's items are held out of the payer's wallet in ONE
-- commit: every item's hold (one row per item transfer id, as the single hold writes it), or
-- none. Idempotent by the disbursement id: the first decision (funded or refused) is kept in
-- batch_fundings and every later call answers it again, so a retried or late funding call can
-- never hold a refused batch's money (the batch form of hold_refusals in 003).
--
-- An item whose payee is not a live user is not held: its refusal (dest_not_found) is
-- remembered in hold_refusals like a single hold's, the rest of the batch is funded, and the
-- saga ends that item FAILED with no money of it moved (it never left the payer). The funds
-- check is against the whole batch's total, so the payer's answer does not depend on the payees.
--
-- Locks: the batch's advisory lock (ledger_lock_transfer of the disbursement id, a key space the
-- transfer ids share: a collision only serialises), then the payer's wallet. The item holds are
-- new rows under that wallet lock; no other lock is waited for, so this cannot deadlock with
-- the steps of 002 (which take transfer locks, then wallets, each in ascending order: a funding
-- holds one transfer-space lock and one wallet).

CREATE TABLE batch_fundings (
  disbursement_id uuid PRIMARY KEY,
  source_user_id  bigint NOT NULL,
  item_count      integer NOT NULL CHECK (item_count BETWEEN 1 AND 1000),
  total_minor     bigint NOT NULL CHECK (total_minor > 0 AND total_minor <= 9007199254740991),
  result          text NOT NULL CHECK (result IN ('ok', 'insufficient_funds', 'source_not_found')),
  source_balance_before_minor bigint,
  created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER batch_fundings_append_only BEFORE UPDATE OR DELETE ON batch_fundings
  FOR EACH ROW EXECUTE FUNCTION ledger_forbid_change();
CREATE TRIGGER batch_fundings_no_truncate BEFORE TRUNCATE ON batch_fundings
  FOR EACH STATEMENT EXECUTE FUNCTION ledger_forbid_change();

-- One row per item, in input order: 'ok' (held) or 'dest_not_found', with the payer's balance
-- before that item's hold. Or, when the batch is refused, one row per item with the refusal
-- ('insufficient_funds', 'source_not_found', or 'funding_mismatch' for a disbursement id funded
-- with another payer, count or total) and no hold.
CREATE FUNCTION ledger_fund_batch(
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

  UPDATE accounts SET balance_minor = balance_minor - v_held_minor, updated_at = now() WHERE id = v_account_id;
  INSERT INTO batch_fundings (disbursement_id, source_user_id, item_count, total_minor, result,
                              source_balance_before_minor)
  VALUES (p_disbursement_id, p_source_user_id, v_count, v_total::bigint, 'ok', v_balance_minor)
  RETURNING * INTO f;
  RETURN QUERY SELECT * FROM ledger_batch_answer(f, p_transfer_ids);
END
$$;

-- A funding's answer, from what it wrote: per item its hold (ok), its remembered refusal, or the
-- batch's refusal.
CREATE FUNCTION ledger_batch_answer(f batch_fundings, p_transfer_ids uuid[])
RETURNS TABLE (ordinal integer, transfer_id uuid, result text, source_balance_before_minor bigint)
LANGUAGE sql STABLE AS $$
  SELECT o.i::integer, o.id,
         CASE WHEN f.result <> 'ok' THEN f.result WHEN h.transfer_id IS NOT NULL THEN 'ok'
              ELSE coalesce(r.result, 'hold_not_found') END,
         CASE WHEN f.result = 'ok' THEN h.source_balance_before_minor END
  FROM unnest(p_transfer_ids) WITH ORDINALITY AS o(id, i)
  LEFT JOIN holds h ON h.transfer_id = o.id
  LEFT JOIN hold_refusals r ON r.transfer_id = o.id
  ORDER BY o.i
$$;
