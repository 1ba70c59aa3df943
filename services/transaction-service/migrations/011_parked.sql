-- A transfer whose step met a broken invariant (the ledger answered what the saga's state rules
-- out) is parked rather than retried for ever: `parked`, with the state it was parked from and
-- why. No driver moves it (every transition is a compare-and-set on the state) until an operator
-- re-drives it back to `parked_from`. Only states whose public status is PENDING are parked, so
-- parking never changes what a client sees.
ALTER TABLE transfers ADD COLUMN parked_from text
  CHECK (parked_from IN ('created', 'recorded', 'refunding'));
ALTER TABLE transfers ADD COLUMN parked_reason text;
ALTER TABLE transfers DROP CONSTRAINT transfers_state_check;
ALTER TABLE transfers ADD CONSTRAINT transfers_state_check
  CHECK (state IN ('funding', 'created', 'held', 'recorded', 'posted', 'completed', 'refunding', 'failing', 'failed', 'voiding', 'parked'));
ALTER TABLE transfers ADD CONSTRAINT transfers_parked_check
  CHECK ((state = 'parked') = (parked_from IS NOT NULL AND parked_reason IS NOT NULL));
