-- The saga's own durable state: one row per transfer (its state machine position, the
-- idempotency key that created it and the response first given), and the transactional outbox
-- of messages for Kafka. Every state change and the message it emits commit together.
CREATE TABLE transfers (
  id                  uuid PRIMARY KEY,
  idempotency_key     text UNIQUE,
  request_fingerprint text NOT NULL,
  source_user_id      bigint NOT NULL CHECK (source_user_id > 0),
  dest_user_id        bigint NOT NULL CHECK (dest_user_id > 0 AND dest_user_id <> source_user_id),
  amount_minor        bigint NOT NULL CHECK (amount_minor > 0 AND amount_minor <= 9007199254740991),
  state               text NOT NULL CHECK (state IN ('created', 'held', 'recorded', 'posted', 'completed', 'refunding', 'failing', 'failed')),
  failure_reason      text,
  source_init_bal     bigint CHECK (source_init_bal >= 0),
  dest_init_bal       bigint CHECK (dest_init_bal >= 0),
  response_status     integer,
  response_body       jsonb,
  attempts            integer NOT NULL DEFAULT 0,
  next_attempt_at     timestamptz NOT NULL,
  created_at          timestamptz NOT NULL,
  updated_at          timestamptz NOT NULL
);

-- The recovery sweep scans only unfinished transfers that are due.
CREATE INDEX transfers_due ON transfers (next_attempt_at) WHERE state NOT IN ('completed', 'failed');

CREATE TABLE outbox (
  id         bigserial PRIMARY KEY,
  topic      text NOT NULL,
  key        text NOT NULL,
  payload    jsonb NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
