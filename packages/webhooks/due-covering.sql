-- The claim's first read, the oldest due rows across endpoints with their endpoint, is served by
-- the time-ordered index alone: it carries the endpoint id, so an ordered index-only scan stops
-- after the rows the claim's window asks for. Without it, once a VACUUM had marked the table's
-- pages all-visible, the planner read every pending row through webhook_deliveries_endpoint_due
-- (which holds both columns) and sorted them, since with no statistics on `state` it takes a burst
-- of 2,000 pending rows for about 45: a claim of 16 rows read all 2,000. The new index is built
-- before the old one is dropped, so the claim always has one. Migrations run in one transaction,
-- so this build blocks writes to the table while it runs: on a large table, build it first with
-- CREATE INDEX CONCURRENTLY under the same name, and this finds it there.
CREATE INDEX IF NOT EXISTS webhook_deliveries_due_covering ON webhook_deliveries (next_attempt_at)
  INCLUDE (endpoint_id) WHERE state = 'pending';
DROP INDEX IF EXISTS webhook_deliveries_due;
