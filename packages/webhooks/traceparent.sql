-- The W3C trace context a delivery continues: the trace of the request that caused its event
-- (a transfer's creating request, copied from its row), so that each attempt's span, its log
-- lines and the `traceparent` header the receiver gets are in that trace. Null when there was
-- none (deliveries enqueued before this column, transfers of a batch): the attempt starts a trace.
ALTER TABLE webhook_deliveries ADD COLUMN traceparent text;
