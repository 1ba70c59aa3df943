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
import { Batcher } from "#packages/runtime/batcher.ts";
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

/** A transition waiting to be committed (see commitTransition). */
interface PendingTransition {
  expected: SagaState;
  next: SagaTransfer;
  messages: OutgoingMessage[];
  wait_ms: number;
  response: { status: number; body: unknown } | null;
}

export interface SagaStoreLimits {
  /** Most transfers per batched statement (inserts, transitions). */
  write_batch_max: number;
  /** Most batched statements of each kind (and lane) running at once. */
  writes_in_flight_max: number;
  /** Most writes waiting for a batch before callers are refused (back-pressure). */
  writes_waiting_max: number;
}

export const defaultStoreLimits: SagaStoreLimits = {
  write_batch_max: 100,
  writes_in_flight_max: 4,
  writes_waiting_max: 10_000,
};

export class SagaStore {
  readonly pool: Pool;
  /** Called after a commit that added outbox rows, so the relay wakes at once instead of polling. */
  onOutbox: () => void = () => {};
  readonly #inserts: Batcher<NewTransfer, { created: boolean; transfer: StoredTransfer }>;
  /** Two lanes: the first transition (a client's POST waits on it), and all later ones. */
  readonly #first_transitions: Batcher<PendingTransition, StoredTransfer | null>;
  readonly #later_transitions: Batcher<PendingTransition, StoredTransfer | null>;

  constructor(pool: Pool, limits: SagaStoreLimits = defaultStoreLimits) {
    this.pool = pool;
    // Concurrent requests and event handlers share statements (and commits): see Batcher. A
    // batch holds each transfer (and each idempotency key) at most once.
    const batching = {
      max_batch: limits.write_batch_max,
      max_in_flight: limits.writes_in_flight_max,
      max_waiting: limits.writes_waiting_max,
    };
    this.#inserts = new Batcher({
      name: "saga inserts",
      ...batching,
      key: (input) => input.idempotency_key ?? input.id,
      run: (inputs) => this.#createOrGetMany(inputs),
    });
    const transitions = (name: string) =>
      new Batcher<PendingTransition, StoredTransfer | null>({
        name,
        ...batching,
        key: (pending) => pending.next.id,
        run: (pending) => this.#commitMany(pending),
      });
    this.#first_transitions = transitions("saga first transitions");
    this.#later_transitions = transitions("saga later transitions");
  }

  /** Insert the intent, or return the transfer that already holds this idempotency key. */
  createOrGet(input: NewTransfer): Promise<{ created: boolean; transfer: StoredTransfer }> {
    return this.#inserts.submit(input);
  }

  async #createOrGetMany(
    inputs: NewTransfer[],
  ): Promise<Array<{ created: boolean; transfer: StoredTransfer }>> {
    const inserted = await this.pool.query<TransferRow>(
      `INSERT INTO transfers (id, idempotency_key, request_fingerprint, source_user_id, dest_user_id, amount_minor,
                              state, next_attempt_at, created_at, updated_at)
       SELECT i.id, i.idempotency_key, i.request_fingerprint, i.source_user_id, i.dest_user_id, i.amount_minor,
              'created', i.now + (i.step_timeout_ms * interval '1 millisecond'), i.now, i.now
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[],
                     $7::timestamptz[], $8::float8[])
           AS i(id, idempotency_key, request_fingerprint, source_user_id, dest_user_id, amount_minor, now,
                step_timeout_ms)
       ON CONFLICT (idempotency_key) DO NOTHING
       RETURNING ${COLUMNS}`,
      [
        inputs.map((i) => i.id),
        inputs.map((i) => i.idempotency_key),
        inputs.map((i) => i.request_fingerprint),
        inputs.map((i) => i.source_user_id),
        inputs.map((i) => i.dest_user_id),
        inputs.map((i) => i.amount),
        inputs.map((i) => i.now),
        inputs.map((i) => i.step_timeout_ms),
      ],
    );
    const created = new Map(inserted.rows.map((row) => [row.id, fromRow(row)]));
    const taken = inputs.filter((i) => !created.has(i.id)).map((i) => i.idempotency_key);
    if (taken.some((key) => key === null)) throw new Error("invariant: insert without a key cannot conflict");
    const existing = new Map<string, StoredTransfer>();
    if (taken.length > 0) {
      const found = await this.pool.query<TransferRow>(
        `SELECT ${COLUMNS} FROM transfers WHERE idempotency_key = ANY($1::text[])`,
        [taken],
      );
      for (const row of found.rows) existing.set(row.idempotency_key as string, fromRow(row));
    }
    return inputs.map((input) => {
      const mine = created.get(input.id);
      if (mine !== undefined) return { created: true, transfer: mine };
      const theirs = existing.get(input.idempotency_key as string);
      if (theirs === undefined) throw new Error("invariant: conflicting idempotency key vanished");
      return { created: false, transfer: theirs };
    });
  }

  async get(id: string): Promise<StoredTransfer | null> {
    const result = await this.pool.query<TransferRow>(`SELECT ${COLUMNS} FROM transfers WHERE id = $1`, [id]);
    const row = result.rows[0];
    return row === undefined ? null : fromRow(row);
  }

  /** Several transfers in one round trip (an event batch's), keyed by lower-case id; missing ids are absent. */
  async getMany(ids: string[]): Promise<Map<string, StoredTransfer>> {
    if (ids.length === 0) return new Map();
    const result = await this.pool.query<TransferRow>(
      `SELECT ${COLUMNS} FROM transfers WHERE id = ANY($1::uuid[])`,
      [ids],
    );
    return new Map(result.rows.map((row) => [row.id, fromRow(row)]));
  }

  /**
   * Compare-and-set the state and enqueue the messages, atomically: the outbox rows are inserted
   * in the same statement, and only if the update matched. Concurrent transitions of different
   * transfers share one statement (one commit). Returns the new row, or null if another actor
   * moved the transfer first (the caller reloads and re-decides). `response`, if given, is kept
   * as the request's first answer unless one is already kept.
   */
  commitTransition(
    expected: SagaState,
    next: SagaTransfer,
    messages: OutgoingMessage[],
    wait_ms: number,
    response: { status: number; body: unknown } | null = null,
  ): Promise<StoredTransfer | null> {
    const lane = expected === "created" ? this.#first_transitions : this.#later_transitions;
    return lane.submit({ expected, next, messages, wait_ms, response });
  }

  async #commitMany(batch: PendingTransition[]): Promise<Array<StoredTransfer | null>> {
    // Rows are locked in id order, so two batches that share transfers cannot deadlock.
    const pending = [...batch].sort((a, b) => (a.next.id < b.next.id ? -1 : a.next.id > b.next.id ? 1 : 0));
    const messages = pending.flatMap((p) => p.messages.map((m) => ({ transfer_id: p.next.id, ...m })));
    const updated = await this.pool.query<TransferRow>(
      `WITH moved AS (
         UPDATE transfers t
            SET state = i.state, failure_reason = i.failure_reason, source_init_bal = i.source_init_bal,
                dest_init_bal = i.dest_init_bal, updated_at = i.updated_at, attempts = 0,
                next_attempt_at = now() + (i.wait_ms * interval '1 millisecond'),
                response_status = coalesce(t.response_status, i.response_status),
                response_body = CASE WHEN t.response_status IS NULL THEN i.response_body ELSE t.response_body END
           FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[],
                       $7::timestamptz[], $8::float8[], $9::integer[], $10::jsonb[])
             AS i(id, expected, state, failure_reason, source_init_bal, dest_init_bal, updated_at, wait_ms,
                  response_status, response_body)
          WHERE t.id = i.id AND t.state = i.expected
        RETURNING ${COLUMNS.split(", ")
          .map((c) => `t.${c}`)
          .join(", ")}),
       queued AS (
         INSERT INTO outbox (topic, key, payload)
         SELECT m.topic, m.key, m.payload
           FROM unnest($11::uuid[], $12::text[], $13::text[], $14::jsonb[]) WITH ORDINALITY
             AS m(transfer_id, topic, key, payload, n)
          WHERE m.transfer_id IN (SELECT id FROM moved)
          ORDER BY m.n)
       SELECT * FROM moved`,
      [
        pending.map((p) => p.next.id),
        pending.map((p) => p.expected),
        pending.map((p) => p.next.state),
        pending.map((p) => p.next.failure_reason),
        pending.map((p) => p.next.source_init_bal),
        pending.map((p) => p.next.dest_init_bal),
        pending.map((p) => p.next.updated_at),
        pending.map((p) => p.wait_ms),
        pending.map((p) => p.response?.status ?? null),
        pending.map((p) => (p.response === null ? null : JSON.stringify(p.response.body))),
        messages.map((m) => m.transfer_id),
        messages.map((m) => m.topic),
        messages.map((m) => m.key),
        messages.map((m) => JSON.stringify(m.value)),
      ],
    );
    const moved = new Map(updated.rows.map((row) => [row.id, fromRow(row)]));
    if (messages.some((m) => moved.has(m.transfer_id))) this.onOutbox();
    return batch.map((p) => moved.get(p.next.id) ?? null);
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
