-- A state for a hold that succeeded after its transfer had failed without one (see machine.ts):
-- the saga voids it, and the transfer stays FAILED.
ALTER TABLE transfers DROP CONSTRAINT transfers_state_check;
ALTER TABLE transfers ADD CONSTRAINT transfers_state_check
  CHECK (state IN ('created', 'held', 'recorded', 'posted', 'completed', 'refunding', 'failing', 'failed', 'voiding'));
