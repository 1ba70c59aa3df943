-- The planner must not trust a measured share of pending deliveries. Most rows of this table are
-- delivered, so an ANALYZE taken between bursts finds no pending row at all; the planner then
-- takes a burst's thousands of pending rows for one, and the dispatcher's claim reads each
-- endpoint's due rows through the time-ordered index (webhook_deliveries_due), dropping every
-- other endpoint's rows on the way: a claim of 100 rows over 2,500 pending ones took 80-130 ms
-- instead of 10. Without statistics on `state`, `state = 'pending'` is estimated at a fixed small
-- share of the table, never at nothing, and the per-endpoint reads take
-- webhook_deliveries_endpoint_due whatever the last ANALYZE saw. Changing the column's type to the
-- type it has clears the statistics already gathered (the table is not rewritten; the two partial
-- indexes on `state` are rebuilt, so on a large table run this at a quiet time).
ALTER TABLE webhook_deliveries ALTER COLUMN state SET STATISTICS 0;
ALTER TABLE webhook_deliveries ALTER COLUMN state TYPE text;
