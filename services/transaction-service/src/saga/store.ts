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
import { assert, InvariantError } from "#packages/runtime/assert.ts";
import { Batcher } from "#packages/runtime/batcher.ts";
import { backoff_ms } from "#packages/runtime/index.ts";
import { rowFromContext, TRACEPARENT } from "#packages/tracing/carriers.ts";
import { enqueueEventsSql, eventsParam } from "#packages/webhooks/index.ts";
import type { BatchPlace, SagaState, SagaTransfer } from "./machine.ts";
import { transferEventOf } from "./webhook-events.ts";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A batch item's own error, thrown to its caller alone. */
function unwrap<T>(result: T | Error): T {
  if (result instanceof Error) throw result;
  return result;
}

function toError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}

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
  disbursement_id: string | null;
  item_index: number | null;
  reference: string | null;
}

export interface StoredTransfer extends SagaTransfer {
  idempotency_key: string | null;
  request_fingerprint: string;
  response_status: number | null;
  response_body: unknown;
  attempts: number;
}

const COLUMNS =
  "id, idempotency_key, request_fingerprint, source_user_id, dest_user_id, amount_minor, state, failure_reason, source_init_bal, dest_init_bal, response_status, response_body, attempts, created_at, updated_at, disbursement_id, item_index, reference";

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
    place: placeOf(row),
  };
}

/** A batch item's place, from the columns its batch's creation filled (all three, or none). */
export function placeOf(
  row: Pick<TransferRow, "disbursement_id" | "item_index" | "reference">,
): BatchPlace | null {
  if (row.disbursement_id === null || row.item_index === null || row.reference === null) return null;
  return { disbursement_id: row.disbursement_id, item_index: row.item_index, reference: row.reference };
}

/**
 * A transfer to create. Its times (created_at, updated_at, next_attempt_at) are PostgreSQL's,
 * like every due time and deadline of the saga: one clock, whatever the services' clocks say.
 */
export interface NewTransfer {
  id: string;
  idempotency_key: string | null;
  request_fingerprint: string;
  source_user_id: number;
  dest_user_id: number;
  amount: number;
  step_timeout_ms: number;
}

type TracedNewTransfer = NewTransfer & { traceparent: string | null };

export interface CreateResult {
  created: boolean;
  transfer: StoredTransfer;
  /** How long ago the transfer was created, on PostgreSQL's clock. */
  age_ms: number;
}

/** A transfer the sweep claimed, with how long it has waited in its state (PostgreSQL's clock). */
export interface DueTransfer extends StoredTransfer {
  waited_ms: number;
  /** The creating request's trace context (carriers.ts), or null. */
  traceparent: string | null;
}

/**
 * A write failed in a way that may have come after its commit (the connection dropped, the
 * server restarted) and re-reading could not tell whether this transfer was created. It may
 * exist: the caller must say so, with its id, and never ask for a plain retry (a keyless retry
 * would pay twice).
 */
export class TransferOutcomeUnknownError extends Error {
  readonly transfer_id: string;
  constructor(transfer_id: string, cause: unknown) {
    super(`the creation of transfer ${transfer_id} may or may not have committed`, { cause });
    this.transfer_id = transfer_id;
  }
}

/**
 * A transfer event's deliveries continue the trace of the request that created the transfer, or,
 * for an item of a batch (whose row keeps none), of the request that created the batch.
 */
const EVENT_TRACEPARENT = `(SELECT coalesce(tr.traceparent, d.traceparent)
                              FROM transfers tr LEFT JOIN disbursements d ON d.id = tr.disbursement_id
                             WHERE tr.id = (ev.data->'transaction'->>'id')::uuid)`;

/** Longest parked reason kept (an error message quoting a ledger answer can be long). */
const PARKED_REASON_MAX = 2_000;

/** Attempts, with backoff, to learn a failed write's outcome by reading it back. */
const REREAD_ATTEMPTS = 4;

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
  /** Called after a commit that enqueued webhook deliveries (how many), so the dispatcher sends them at once. */
  onWebhooks: (deliveries: number) => void = () => {};
  /** Per item, its result or the error that item alone raises (an outcome a re-read could not learn). */
  readonly #inserts: Batcher<TracedNewTransfer, CreateResult | Error>;
  /** Two lanes: the first transition (a client's POST waits on it), and all later ones. */
  readonly #first_transitions: Batcher<PendingTransition, StoredTransfer | null | Error>;
  readonly #later_transitions: Batcher<PendingTransition, StoredTransfer | null | Error>;

  constructor(pool: Pool, limits: SagaStoreLimits = defaultStoreLimits) {
    this.pool = pool;
    // Concurrent requests and event handlers share statements (and commits): see Batcher. A
    // batch holds each transfer (and each idempotency key) at most once.
    const batching = {
      batch_max: limits.write_batch_max,
      in_flight_max: limits.writes_in_flight_max,
      waiting_max: limits.writes_waiting_max,
    };
    this.#inserts = new Batcher({
      name: "saga inserts",
      ...batching,
      key: (input) => input.idempotency_key ?? input.id,
      run: (inputs) => this.#createOrGetMany(inputs),
    });
    const transitions = (name: string) =>
      new Batcher<PendingTransition, StoredTransfer | null | Error>({
        name,
        ...batching,
        key: (pending) => pending.next.id,
        run: (pending) => this.#commitMany(pending),
      });
    this.#first_transitions = transitions("saga first transitions");
    this.#later_transitions = transitions("saga later transitions");
  }

  /**
   * Insert the intent, or return the transfer that already holds this idempotency key. Throws
   * TransferOutcomeUnknownError when the insert failed and its outcome could not be learnt.
   */
  async createOrGet(input: NewTransfer): Promise<CreateResult> {
    // The request's trace, taken now: the insert runs in a statement shared with other requests.
    return unwrap(await this.#inserts.submit({ ...input, traceparent: rowFromContext() }));
  }

  async #createOrGetMany(inputs: TracedNewTransfer[]): Promise<Array<CreateResult | Error>> {
    try {
      return await this.#insertMany(inputs);
    } catch (error) {
      // The statement may have committed before it failed (a restart between the insert and
      // its answer, a connection lost after COMMIT): every request learns its own outcome.
      return this.#learnInserts(inputs, error);
    }
  }

  async #insertMany(inputs: TracedNewTransfer[]): Promise<Array<CreateResult | Error>> {
    const inserted = await this.pool.query<TransferRow & { age_ms: number }>(
      `INSERT INTO transfers (id, idempotency_key, request_fingerprint, source_user_id, dest_user_id, amount_minor,
                              state, next_attempt_at, created_at, updated_at, traceparent)
       SELECT i.id, i.idempotency_key, i.request_fingerprint, i.source_user_id, i.dest_user_id, i.amount_minor,
              'created', now() + (i.step_timeout_ms * interval '1 millisecond'), now(), now(), i.traceparent
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::float8[],
                     $8::text[])
           AS i(id, idempotency_key, request_fingerprint, source_user_id, dest_user_id, amount_minor,
                step_timeout_ms, traceparent)
       ON CONFLICT (idempotency_key) DO NOTHING
       RETURNING ${COLUMNS}, 0::float8 AS age_ms`,
      [
        inputs.map((i) => i.id),
        inputs.map((i) => i.idempotency_key),
        inputs.map((i) => i.request_fingerprint),
        inputs.map((i) => i.source_user_id),
        inputs.map((i) => i.dest_user_id),
        inputs.map((i) => i.amount),
        inputs.map((i) => i.step_timeout_ms),
        inputs.map((i) => i.traceparent),
      ],
    );
    const created = new Set(inserted.rows.map((row) => row.id));
    const taken = inputs.filter((i) => !created.has(i.id));
    assert(
      taken.every((i) => i.idempotency_key !== null),
      "insert without a key cannot conflict",
    );
    const found = taken.length === 0 ? [] : await this.#readCreated(taken);
    return this.#resultsOf(inputs, [...inserted.rows, ...found], (input) => {
      throw new InvariantError(`the transfer holding idempotency key of ${input.id} vanished`);
    });
  }

  /** The transfers with these inputs' ids or keys, with their age on PostgreSQL's clock. */
  async #readCreated(inputs: NewTransfer[]): Promise<Array<TransferRow & { age_ms: number }>> {
    const { rows } = await this.pool.query<TransferRow & { age_ms: number }>(
      `SELECT ${COLUMNS}, extract(epoch FROM now() - created_at) * 1000 AS age_ms FROM transfers
        WHERE id = ANY($1::uuid[]) OR idempotency_key = ANY($2::text[])`,
      [
        inputs.map((i) => i.id),
        inputs.flatMap((i) => (i.idempotency_key === null ? [] : [i.idempotency_key])),
      ],
    );
    return rows;
  }

  /** Each input's transfer: its own (created), the key's holder (not created), else `missing`. */
  #resultsOf(
    inputs: NewTransfer[],
    rows: Array<TransferRow & { age_ms: number }>,
    missing: (input: NewTransfer) => CreateResult | Error,
  ): Array<CreateResult | Error> {
    const byId = new Map(rows.map((row) => [row.id, row]));
    const byKey = new Map(rows.map((row) => [row.idempotency_key, row]));
    return inputs.map((input) => {
      const mine = byId.get(input.id);
      if (mine !== undefined) return { created: true, transfer: fromRow(mine), age_ms: Number(mine.age_ms) };
      const theirs = input.idempotency_key === null ? undefined : byKey.get(input.idempotency_key);
      if (theirs !== undefined)
        return { created: false, transfer: fromRow(theirs), age_ms: Number(theirs.age_ms) };
      return missing(input);
    });
  }

  /**
   * After a failed insert: read back by id and key, retrying while PostgreSQL is away. A transfer
   * found is answered as if the insert had answered. One not found was not created, or its
   * statement is still finishing: a keyed request may safely retry (the key finds it), a keyless
   * one is told its transfer may exist.
   */
  async #learnInserts(inputs: NewTransfer[], failure: unknown): Promise<Array<CreateResult | Error>> {
    const unknown = (input: NewTransfer) =>
      input.idempotency_key === null ? new TransferOutcomeUnknownError(input.id, failure) : toError(failure);
    for (let attempt = 0; attempt < REREAD_ATTEMPTS; attempt++) {
      if (attempt > 0) await sleep(backoff_ms(attempt, 100, 1_000));
      try {
        return this.#resultsOf(inputs, await this.#readCreated(inputs), unknown);
      } catch {
        // PostgreSQL still away: try again, then give up below.
      }
    }
    return inputs.map(unknown);
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
  async commitTransition(
    expected: SagaState,
    next: SagaTransfer,
    messages: OutgoingMessage[],
    wait_ms: number,
    response: { status: number; body: unknown } | null = null,
  ): Promise<StoredTransfer | null> {
    const lane = expected === "created" ? this.#first_transitions : this.#later_transitions;
    return unwrap(await lane.submit({ expected, next, messages, wait_ms, response }));
  }

  async #commitMany(batch: PendingTransition[]): Promise<Array<StoredTransfer | null | Error>> {
    try {
      return await this.#updateMany(batch);
    } catch (error) {
      return this.#learnTransitions(batch, error);
    }
  }

  /**
   * After a failed batch of transitions: each one is read back. In its target state, it is taken
   * as committed (by this batch, or by a driver that made the same move: either way the state
   * and its message are in); still in the expected state, it did not commit and its caller gets
   * the error (a compare-and-set is safe to retry); elsewhere, another actor moved it (null).
   */
  async #learnTransitions(
    batch: PendingTransition[],
    failure: unknown,
  ): Promise<Array<StoredTransfer | null | Error>> {
    let rows: Map<string, StoredTransfer>;
    try {
      rows = await this.getMany(batch.map((p) => p.next.id));
    } catch {
      return batch.map(() => toError(failure));
    }
    return batch.map((p) => {
      const row = rows.get(p.next.id.toLowerCase());
      if (row === undefined || row.state === p.expected) return toError(failure);
      return row.state === p.next.state ? row : null;
    });
  }

  async #updateMany(batch: PendingTransition[]): Promise<Array<StoredTransfer | null>> {
    // Rows are locked in id order, so two batches that share transfers cannot deadlock.
    const pending = [...batch].sort((a, b) => (a.next.id < b.next.id ? -1 : a.next.id > b.next.id ? 1 : 0));
    const messages = pending.flatMap((p) => p.messages.map((m) => ({ transfer_id: p.next.id, ...m })));
    // Webhook events of the transitions that make a status final, enqueued by this statement
    // for the rows it really moved: in the transition's commit, or not at all.
    const events = pending.flatMap((p) => transferEventOf(p.expected, p.next) ?? []);
    const updated = await this.pool.query<TransferRow & { hooks_enqueued: number }>(
      `WITH moved AS (
         UPDATE transfers t
            SET state = i.state, failure_reason = i.failure_reason, source_init_bal = i.source_init_bal,
                dest_init_bal = i.dest_init_bal, updated_at = now(), attempts = 0,
                next_attempt_at = now() + (i.wait_ms * interval '1 millisecond'),
                response_status = coalesce(t.response_status, i.response_status),
                response_body = CASE WHEN t.response_status IS NULL THEN i.response_body ELSE t.response_body END
           FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[],
                       $7::float8[], $8::integer[], $9::jsonb[])
             AS i(id, expected, state, failure_reason, source_init_bal, dest_init_bal, wait_ms,
                  response_status, response_body)
          WHERE t.id = i.id AND t.state = i.expected
        RETURNING ${COLUMNS.split(", ")
          .map((c) => `t.${c}`)
          .join(", ")}),
       queued AS (
         INSERT INTO outbox (topic, key, payload, traceparent)
         SELECT m.topic, m.key,
                -- A record's snapshot carries the transition's time on PostgreSQL's clock, as the row does.
                CASE WHEN m.payload ? 'snapshot'
                     THEN jsonb_set(m.payload, '{snapshot,updated_at}',
                                    to_jsonb(to_char(mv.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')))
                     ELSE m.payload END,
                m.traceparent
           FROM unnest($10::uuid[], $11::text[], $12::text[], $13::jsonb[], $14::text[]) WITH ORDINALITY
             AS m(transfer_id, topic, key, payload, traceparent, n)
           JOIN moved mv ON mv.id = m.transfer_id
          ORDER BY m.n),
       hooks AS (${enqueueEventsSql("$15", "ev.data->'transaction'->>'id' IN (SELECT id::text FROM moved)", EVENT_TRACEPARENT)}
                 RETURNING 1)
       -- The dispatcher is woken only for deliveries that exist: most final transfers have no endpoint.
       SELECT moved.*, (SELECT count(*) FROM hooks)::int AS hooks_enqueued FROM moved`,
      [
        pending.map((p) => p.next.id),
        pending.map((p) => p.expected),
        pending.map((p) => p.next.state),
        pending.map((p) => p.next.failure_reason),
        pending.map((p) => p.next.source_init_bal),
        pending.map((p) => p.next.dest_init_bal),
        pending.map((p) => p.wait_ms),
        pending.map((p) => p.response?.status ?? null),
        pending.map((p) => (p.response === null ? null : JSON.stringify(p.response.body))),
        messages.map((m) => m.transfer_id),
        messages.map((m) => m.topic),
        messages.map((m) => m.key),
        messages.map((m) => JSON.stringify(m.value)),
        messages.map((m) => m.headers?.[TRACEPARENT] ?? null),
        eventsParam(events),
      ],
    );
    const moved = new Map(updated.rows.map((row) => [row.id, fromRow(row)]));
    if (messages.some((m) => moved.has(m.transfer_id))) this.onOutbox();
    const hooks_enqueued = updated.rows[0]?.hooks_enqueued ?? 0;
    if (hooks_enqueued > 0) this.onWebhooks(hooks_enqueued);
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
  ): Promise<DueTransfer[]> {
    const result = await this.pool.query<TransferRow & { waited_ms: number; traceparent: string | null }>(
      `UPDATE transfers t
          SET attempts = t.attempts + 1,
              next_attempt_at = now() + ((CASE WHEN t.state IN ('posted', 'failing')
                    THEN least($5::float8, $4::float8 * power(2, least(t.attempts, 20)))
                    ELSE least($3::float8, $2::float8 * power(2, least(t.attempts, 20))) END) * interval '1 millisecond')
         FROM (SELECT id FROM transfers
                WHERE state NOT IN ('completed', 'failed') AND state <> 'parked' AND next_attempt_at <= now()
                ORDER BY next_attempt_at
                LIMIT $1
                FOR UPDATE SKIP LOCKED) due
        WHERE t.id = due.id
      RETURNING ${COLUMNS.split(", ")
        .map((c) => `t.${c}`)
        .join(", ")}, extract(epoch FROM now() - t.updated_at) * 1000 AS waited_ms, t.traceparent`,
      [limit, backoff.step_base_ms, backoff.step_cap_ms, backoff.resend_base_ms, backoff.resend_cap_ms],
    );
    return result.rows.map((row) => ({
      ...fromRow(row),
      waited_ms: Number(row.waited_ms),
      traceparent: row.traceparent,
    }));
  }

  /**
   * Park a transfer whose step met a broken invariant (machine.ts: `parked`), if it is still in
   * `expected`. Returns the parked row, or null if another driver moved it first.
   */
  async park(id: string, expected: SagaState, reason: string): Promise<StoredTransfer | null> {
    const { rows } = await this.pool.query<TransferRow>(
      `UPDATE transfers SET state = 'parked', parked_from = state, parked_reason = $3, updated_at = now()
        WHERE id = $1 AND state = $2
      RETURNING ${COLUMNS}`,
      [id, expected, reason.slice(0, PARKED_REASON_MAX)],
    );
    const row = rows[0];
    return row === undefined ? null : fromRow(row);
  }

  /**
   * An operator's re-drive: the parked transfer goes back to the state it was parked from, due at
   * once for the sweep. Null if there is no such transfer; `parked: false` if it is not parked.
   */
  async redrive(id: string): Promise<{ parked: boolean; transfer: StoredTransfer } | null> {
    const { rows } = await this.pool.query<TransferRow & { was_parked: boolean }>(
      `WITH target AS (SELECT id, state FROM transfers WHERE id = $1 FOR UPDATE),
       moved AS (
         UPDATE transfers t SET state = t.parked_from, parked_from = NULL, parked_reason = NULL,
                attempts = 0, next_attempt_at = now(), updated_at = now()
           FROM target WHERE t.id = target.id AND target.state = 'parked'
         RETURNING ${COLUMNS.split(", ")
           .map((c) => `t.${c}`)
           .join(", ")})
       SELECT *, true AS was_parked FROM moved
       UNION ALL
       SELECT ${COLUMNS}, false AS was_parked FROM transfers
        WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM moved)`,
      [id],
    );
    const row = rows[0];
    return row === undefined ? null : { parked: row.was_parked, transfer: fromRow(row) };
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
    "INSERT INTO outbox (topic, key, payload, traceparent) SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::text[])",
    [
      messages.map((m) => m.topic),
      messages.map((m) => m.key),
      messages.map((m) => JSON.stringify(m.value)),
      messages.map((m) => m.headers?.[TRACEPARENT] ?? null),
    ],
  );
}
