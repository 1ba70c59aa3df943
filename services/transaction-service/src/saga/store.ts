/**
 * PostgreSQL access for the saga. Every transition is an optimistic compare-and-set on the
 * state (`WHERE state = $expected`) committed together with its outbox message: two instances
 * racing on one transfer cannot both move it, and no message is ever emitted for a state that
 * was not committed (no dual write).
 */
import { minorFromPg } from "#packages/contracts/money.ts";
import type { FailureReason } from "#packages/contracts/transfer.ts";
import type { OutgoingMessage } from "#packages/kafka/index.ts";
import type { Pool } from "#packages/pg/index.ts";
import type { SagaState, SagaTransfer } from "./machine.ts";

interface TransferRow {
  id: string;
  idempotency_key: string | null;
  request_fingerprint: string;
  source_user_id: string;
  dest_user_id: string;
  amount_minor: string;
  state: SagaState;
  failure_reason: FailureReason | null;
  source_init_bal: string | null;
  dest_init_bal: string | null;
  response_status: number | null;
  response_body: unknown;
  attempts: number;
  created_at: Date;
  updated_at: Date;
}

export interface StoredTransfer extends SagaTransfer {
  idempotency_key: string | null;
  request_fingerprint: string;
  response_status: number | null;
  response_body: unknown;
  attempts: number;
}

const COLUMNS =
  "id, idempotency_key, request_fingerprint, source_user_id, dest_user_id, amount_minor, state, failure_reason, source_init_bal, dest_init_bal, response_status, response_body, attempts, created_at, updated_at";

function fromRow(row: TransferRow): StoredTransfer {
  return {
    id: row.id,
    idempotency_key: row.idempotency_key,
    request_fingerprint: row.request_fingerprint,
    state: row.state,
    source_user_id: Number(row.source_user_id),
    dest_user_id: Number(row.dest_user_id),
    amount: minorFromPg(row.amount_minor),
    source_init_bal: row.source_init_bal === null ? null : minorFromPg(row.source_init_bal),
    dest_init_bal: row.dest_init_bal === null ? null : minorFromPg(row.dest_init_bal),
    failure_reason: row.failure_reason,
    response_status: row.response_status,
    response_body: row.response_body,
    attempts: row.attempts,
    created_at: row.created_at.toISOString(),
    updated_at: row.updated_at.toISOString(),
  };
}

export interface NewTransfer {
  id: string;
  idempotency_key: string | null;
  request_fingerprint: string;
  source_user_id: number;
  dest_user_id: number;
  amount: number;
  now: string;
  step_timeout_ms: number;
}

export class SagaStore {
  readonly pool: Pool;
  /** Called after a commit that added outbox rows, so the relay wakes at once instead of polling. */
  onOutbox: () => void = () => {};

  constructor(pool: Pool) {
    this.pool = pool;
  }

  /** Insert the intent, or return the transfer that already holds this idempotency key. */
  async createOrGet(input: NewTransfer): Promise<{ created: boolean; transfer: StoredTransfer }> {
    const inserted = await this.pool.query<TransferRow>(
      `INSERT INTO transfers (id, idempotency_key, request_fingerprint, source_user_id, dest_user_id, amount_minor,
                              state, next_attempt_at, created_at, updated_at)
       VALUES ($1, $2, $3, $4, $5, $6, 'created', $7::timestamptz + ($8 * interval '1 millisecond'), $7, $7)
       ON CONFLICT (idempotency_key) DO NOTHING
       RETURNING ${COLUMNS}`,
      [
        input.id,
        input.idempotency_key,
        input.request_fingerprint,
        input.source_user_id,
        input.dest_user_id,
        input.amount,
        input.now,
        input.step_timeout_ms,
      ],
    );
    const row = inserted.rows[0];
    if (row !== undefined) return { created: true, transfer: fromRow(row) };
    if (input.idempotency_key === null) throw new Error("invariant: insert without a key cannot conflict");
    const existing = await this.pool.query<TransferRow>(
      `SELECT ${COLUMNS} FROM transfers WHERE idempotency_key = $1`,
      [input.idempotency_key],
    );
    const found = existing.rows[0];
    if (found === undefined) throw new Error("invariant: conflicting idempotency key vanished");
    return { created: false, transfer: fromRow(found) };
  }

  async get(id: string): Promise<StoredTransfer | null> {
    const result = await this.pool.query<TransferRow>(`SELECT ${COLUMNS} FROM transfers WHERE id = $1`, [id]);
    const row = result.rows[0];
    return row === undefined ? null : fromRow(row);
  }

  /**
   * Compare-and-set the state and enqueue the messages, atomically: one statement (the outbox
   * rows are inserted only if the update matched), so a transition costs one round trip instead
   * of four (BEGIN, UPDATE, INSERT, COMMIT). Returns the new row, or null if another actor moved
   * the transfer first (the caller reloads and re-decides). `response`, if given, is kept as
   * the request's first answer unless one is already kept.
   */
  async commitTransition(
    expected: SagaState,
    next: SagaTransfer,
    messages: OutgoingMessage[],
    step_timeout_ms: number,
    response: { status: number; body: unknown } | null = null,
  ): Promise<StoredTransfer | null> {
    const updated = await this.pool.query<TransferRow>(
      `WITH moved AS (
         UPDATE transfers
            SET state = $3, failure_reason = $4, source_init_bal = $5, dest_init_bal = $6, updated_at = $7,
                attempts = 0, next_attempt_at = now() + ($8 * interval '1 millisecond'),
                response_status = coalesce(response_status, $12),
                response_body = CASE WHEN response_status IS NULL THEN $13::jsonb ELSE response_body END
          WHERE id = $1 AND state = $2
        RETURNING ${COLUMNS}),
       queued AS (
         INSERT INTO outbox (topic, key, payload)
         SELECT m.topic, m.key, m.payload FROM unnest($9::text[], $10::text[], $11::jsonb[]) AS m(topic, key, payload)
          WHERE EXISTS (SELECT 1 FROM moved))
       SELECT * FROM moved`,
      [
        next.id,
        expected,
        next.state,
        next.failure_reason,
        next.source_init_bal,
        next.dest_init_bal,
        next.updated_at,
        step_timeout_ms,
        messages.map((m) => m.topic),
        messages.map((m) => m.key),
        messages.map((m) => JSON.stringify(m.value)),
        response?.status ?? null,
        response === null ? null : JSON.stringify(response.body),
      ],
    );
    const row = updated.rows[0];
    if (row === undefined) return null;
    if (messages.length > 0) this.onOutbox();
    return fromRow(row);
  }

  /** Remember the first response given for a request, for idempotent replays. */
  async saveResponse(id: string, status: number, body: unknown): Promise<void> {
    await this.pool.query(
      "UPDATE transfers SET response_status = $2, response_body = $3 WHERE id = $1 AND response_status IS NULL",
      [id, status, JSON.stringify(body)],
    );
  }

  async enqueue(messages: OutgoingMessage[]): Promise<void> {
    if (messages.length === 0) return;
    await insertOutbox(this.pool, messages);
    this.onOutbox();
  }

  /**
   * Claim unfinished transfers whose step is overdue, pushing their next attempt out with
   * capped exponential backoff so a transfer that keeps failing does not hog the sweep. Waits on
   * the record writer back off further: a re-sent command only helps if one was lost, and a
   * flood of re-sends would deepen the very backlog that made the answer late.
   */
  async claimDue(
    limit: number,
    backoff: { step_base_ms: number; step_cap_ms: number; resend_base_ms: number; resend_cap_ms: number },
  ): Promise<StoredTransfer[]> {
    const result = await this.pool.query<TransferRow>(
      `UPDATE transfers t
          SET attempts = t.attempts + 1,
              next_attempt_at = now() + ((CASE WHEN t.state IN ('held', 'posted', 'failing')
                    THEN least($5::float8, $4::float8 * power(2, least(t.attempts, 20)))
                    ELSE least($3::float8, $2::float8 * power(2, least(t.attempts, 20))) END) * interval '1 millisecond')
         FROM (SELECT id FROM transfers
                WHERE state NOT IN ('completed', 'failed') AND next_attempt_at <= now()
                ORDER BY next_attempt_at
                LIMIT $1
                FOR UPDATE SKIP LOCKED) due
        WHERE t.id = due.id
      RETURNING ${COLUMNS.split(", ")
        .map((c) => `t.${c}`)
        .join(", ")}`,
      [limit, backoff.step_base_ms, backoff.step_cap_ms, backoff.resend_base_ms, backoff.resend_cap_ms],
    );
    return result.rows.map(fromRow);
  }

  /** Counts by state, for health and tests. */
  async countByState(): Promise<Record<string, number>> {
    const result = await this.pool.query<{ state: string; n: string }>(
      "SELECT state, count(*) AS n FROM transfers GROUP BY state",
    );
    return Object.fromEntries(result.rows.map((r) => [r.state, Number(r.n)]));
  }
}

/** One multi-row INSERT: atomic on its own. */
async function insertOutbox(db: Pool, messages: OutgoingMessage[]): Promise<void> {
  if (messages.length === 0) return;
  await db.query(
    "INSERT INTO outbox (topic, key, payload) SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[])",
    [messages.map((m) => m.topic), messages.map((m) => m.key), messages.map((m) => JSON.stringify(m.value))],
  );
}
