-- Webhooks (Standard Webhooks): the endpoints users register, the outbox of deliveries (one row
-- per event per subscribed endpoint, written in the same commit as the transition that causes
-- the event), and the log of every attempt. Every time that decides when to send is taken from
-- the database clock (now()), so several dispatchers on several hosts agree on what is due.
CREATE TABLE webhook_endpoints (
  id                          uuid PRIMARY KEY,
  owner_user_id               bigint NOT NULL CHECK (owner_user_id > 0),
  url                         text NOT NULL CHECK (char_length(url) BETWEEN 8 AND 2048),
  events                      text[] NOT NULL CHECK (
    cardinality(events) BETWEEN 1 AND 3
    AND events <@ ARRAY['transfer.completed', 'transfer.failed', 'disbursement.completed']
  ),
  -- The signing key as the receiver holds it (whsec_<base64>): signing needs the key itself, so it
  -- cannot be stored as a digest. It is shown once, at creation or rotation, never listed or logged.
  secret                      text NOT NULL CHECK (secret ~ '^whsec_[A-Za-z0-9+/=]{24,88}$'),
  -- After a rotation the old key still signs (a second v1 signature) until it expires, so a
  -- receiver can switch keys without dropping deliveries.
  previous_secret             text CHECK (previous_secret ~ '^whsec_[A-Za-z0-9+/=]{24,88}$'),
  previous_secret_expires_at  timestamptz,
  -- enabled: deliveries go out; failing: one delivery ran out of retries, nothing is sent until the
  -- user asks for a redelivery.
  state                       text NOT NULL DEFAULT 'enabled' CHECK (state IN ('enabled', 'failing')),
  failing_since               timestamptz,
  created_at                  timestamptz NOT NULL DEFAULT now(),
  updated_at                  timestamptz NOT NULL DEFAULT now(),
  CHECK ((previous_secret IS NULL) = (previous_secret_expires_at IS NULL))
);

CREATE INDEX webhook_endpoints_owner ON webhook_endpoints (owner_user_id, created_at);

CREATE TABLE webhook_deliveries (
  id              uuid PRIMARY KEY,
  endpoint_id     uuid NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
  -- The Standard Webhooks webhook-id: the event's id, the same on every attempt and redelivery, so
  -- receivers can drop duplicates.
  webhook_id      text NOT NULL CHECK (webhook_id ~ '^[A-Za-z0-9_.:-]{1,128}$'),
  event_type      text NOT NULL CHECK (event_type IN ('transfer.completed', 'transfer.failed', 'disbursement.completed')),
  -- The body, {type, timestamp, data}; bounded so that one event cannot fill the table.
  payload         jsonb NOT NULL CHECK (octet_length(payload::text) <= 65536),
  -- pending: due at next_attempt_at (while an attempt runs, that is the end of its lease: a
  -- dispatcher that dies mid-attempt leaves the row to be claimed again then); delivered; failed:
  -- out of retries.
  state           text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
  next_attempt_at timestamptz NOT NULL,
  -- The attempt in progress: only its claimant may record its outcome.
  claim_token     uuid,
  attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  -- Retries stop once the first attempt since retry_from is older than the retry window.
  retry_from      timestamptz NOT NULL,
  created_at      timestamptz NOT NULL,
  updated_at      timestamptz NOT NULL,
  UNIQUE (webhook_id, endpoint_id)
);

-- The dispatcher's claim scans only the due rows.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, created_at);
-- Finished deliveries are pruned (with their attempts) once past the retention period.
CREATE INDEX webhook_deliveries_finished ON webhook_deliveries (updated_at) WHERE state <> 'pending';

CREATE TABLE webhook_attempts (
  id            bigserial PRIMARY KEY,
  delivery_id   uuid NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
  attempt       integer NOT NULL CHECK (attempt >= 1),
  -- succeeded: a 2xx answer; failed: any other answer, a timeout, a refused address, a network error.
  status        text NOT NULL CHECK (status IN ('succeeded', 'failed')),
  response_code integer CHECK (response_code BETWEEN 100 AND 599),
  latency_ms    integer NOT NULL CHECK (latency_ms >= 0),
  error         text CHECK (char_length(error) <= 500),
  attempted_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, id);
