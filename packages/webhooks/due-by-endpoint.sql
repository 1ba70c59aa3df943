-- The dispatcher's claim reads due deliveries endpoint by endpoint when the oldest due rows are
-- the backlog of endpoints at their in-flight limit: each endpoint's oldest pending row (one
-- descent of this index per endpoint), then the oldest rows of those it serves, as many as each
-- has free slots. Before, a time-ordered read over all endpoints (webhook_deliveries_due, still
-- used for the usual case) read and dropped every due row of a full endpoint, so one endpoint's
-- backlog (a batch's thousand deliveries to its payer) set the cost of every claim. The id makes
-- the order total, so the index alone yields the rows in the claim's order. Migrations run in one
-- transaction, so this build blocks writes to the table while it runs: on a large table, build it
-- first with CREATE INDEX CONCURRENTLY under the same name, and this finds it there.
CREATE INDEX IF NOT EXISTS webhook_deliveries_endpoint_due ON webhook_deliveries (endpoint_id, next_attempt_at, id)
  WHERE state = 'pending';
