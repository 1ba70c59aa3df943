-- The W3C trace context of the request or step that wrote an outbox row, so that the relay's
-- Kafka message continues that trace. Null when tracing is off or there was no span.
ALTER TABLE outbox ADD COLUMN traceparent text;
