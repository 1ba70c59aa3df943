-- The W3C trace context of the request that created a transfer, so that the recovery sweep
-- resumes it in that trace (its log lines keep the transfer's trace_id). Null for transfers of
-- a batch and those created before this column.
ALTER TABLE transfers ADD COLUMN traceparent text;
