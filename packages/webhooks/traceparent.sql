-- The W3C trace context a delivery continues: the trace of the request that caused its event
-- (a transfer's or a batch's creating request, copied from its row), so that each attempt's span,
-- its log lines and the `traceparent` header the receiver gets are in that trace. Null when there
-- was none (deliveries enqueued before this column): the attempt then starts a trace of its own.
ALTER TABLE webhook_deliveries ADD COLUMN traceparent text;
