-- user-service: revocable access tokens and account locks.
--
-- token_version: every access token carries the version it was issued at; a password change or a
-- lock raises it, which revokes every earlier token at once (user-service checks this column,
-- transaction-service a copy in Redis). locked_at: set by the operator; a locked user cannot log in.
ALTER TABLE users
  ADD COLUMN token_version bigint NOT NULL DEFAULT 0 CHECK (token_version >= 0),
  ADD COLUMN locked_at timestamptz;
