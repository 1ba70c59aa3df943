/**
 * PostgreSQL access for disbursements (migrations/004_disbursements.sql). The intent (the
 * disbursement and all its items' transfer rows) is one transaction; the funding's outcome
 * (the disbursement's state, every item's first transition and its record command) is another.
 * Both are a handful of statements whatever the batch's size (unnest), and both are
 * compare-and-set on the disbursement's state, so any number of drivers converge.
 */
import { minorFromPg } from "#packages/contracts/money.ts";
import type { FailureReason } from "#packages/contracts/transfer.ts";
import type { OutgoingMessage } from "#packages/kafka/index.ts";
import { type Pool, withTransaction } from "#packages/pg/index.ts";
import { assert } from "#packages/runtime/assert.ts";
import { rowFromContext } from "#packages/tracing/carriers.ts";
import { enqueueEvents } from "#packages/webhooks/index.ts";
import type { SagaState, SagaTransfer } from "../saga/machine.ts";
import { placeOf } from "../saga/store.ts";
import { transferEventOf } from "../saga/webhook-events.ts";

export type DisbursementState = "created" | "funded" | "refused";
export type DisbursementStatus = "PENDING" | "COMPLETED" | "PARTIALLY_COMPLETED" | "FAILED";

export interface Disbursement {
  id: string;
  idempotency_key: string;
  request_fingerprint: string;
  source_user_id: number;
  reference: string | null;
  state: DisbursementState;
  failure_reason: string | null;
  status: DisbursementStatus;
  item_count: number;
  total_amount: number;
  counts: { pending: number; completed: number; failed: number };
  amount_completed: number;
  amount_refunded: number;
  response_status: number | null;
  response_body: unknown;
  attempts: number;
  /** Raised by the database with every visible change (orders the records). */
  version: number;
  created_at: string;
  updated_at: string;
}

interface DisbursementRow {
  id: string;
  idempotency_key: string;
  request_fingerprint: string;
  source_user_id: string;
  reference: string | null;
  state: DisbursementState;
  failure_reason: string | null;
  status: DisbursementStatus;
  item_count: number;
  total_minor: string;
  pending_count: number;
  completed_count: number;
  failed_count: number;
  amount_completed_minor: string;
  amount_refunded_minor: string;
  response_status: number | null;
  response_body: unknown;
  attempts: number;
  version: string;
  created_at: Date;
  updated_at: Date;
}

const COLUMNS = "d.*, disbursement_status(d) AS status";

function fromRow(row: DisbursementRow): Disbursement {
  return {
    id: row.id,
    idempotency_key: row.idempotency_key,
    request_fingerprint: row.request_fingerprint,
    source_user_id: Number(row.source_user_id),
    reference: row.reference,
    state: row.state,
    failure_reason: row.failure_reason,
    status: row.status,
    item_count: row.item_count,
    total_amount: minorFromPg(row.total_minor),
    counts: { pending: row.pending_count, completed: row.completed_count, failed: row.failed_count },
    amount_completed: minorFromPg(row.amount_completed_minor),
    amount_refunded: minorFromPg(row.amount_refunded_minor),
    response_status: row.response_status,
    response_body: row.response_body,
    attempts: row.attempts,
    version: Number(row.version),
    created_at: row.created_at.toISOString(),
    updated_at: row.updated_at.toISOString(),
  };
}

export interface NewItem {
  transfer_id: string;
  dest_user_id: number;
  amount: number;
  reference: string;
}

export interface NewDisbursement {
  id: string;
  idempotency_key: string;
  request_fingerprint: string;
  source_user_id: number;
  reference: string | null;
  items: readonly NewItem[];
  total_amount: number;
  /** When the disbursement sweep may fund it if its creator did not (a crash, a lost answer). */
  funding_timeout_ms: number;
}

/** An item as stored: the transfer's saga fields plus its place in the batch. */
export interface ItemRow {
  id: string;
  item_index: number;
  dest_user_id: number;
  amount: number;
  state: SagaState;
}

/** What the ledger answered for one item, applied by applyFunding. */
export type ItemFunding =
  | { transfer_id: string; held: true; source_init_bal: number }
  | { transfer_id: string; held: false; reason: FailureReason };

export class DisbursementStore {
  readonly #pool: Pool;
  /** Called after a commit that added outbox rows (the relay wakes at once). */
  onOutbox: () => void = () => {};
  /** Called after a commit that enqueued webhook deliveries (the dispatcher wakes at once). */
  onWebhooks: () => void = () => {};

  constructor(pool: Pool) {
    this.#pool = pool;
  }

  /**
   * The disbursement and its items' transfers in one transaction (items in state `funding`,
   * never due for the transfer sweep), or the disbursement that already holds the key.
   */
  async createOrGet(
    input: NewDisbursement,
  ): Promise<{ created: boolean; disbursement: Disbursement; age_ms: number }> {
    return withTransaction(this.#pool, async (client) => {
      const inserted = await client.query<{ id: string }>(
        `INSERT INTO disbursements (id, idempotency_key, request_fingerprint, source_user_id, reference, state,
                                    item_count, total_minor, pending_count, next_attempt_at, created_at, updated_at,
                                    traceparent)
         -- Milliseconds, as the API shows them: a page cursor then names a row exactly.
         VALUES ($1, $2, $3, $4, $5, 'created', $6, $7, $6, now() + ($8 * interval '1 millisecond'),
                 date_trunc('milliseconds', now()), now(), $9)
         ON CONFLICT (idempotency_key) DO NOTHING RETURNING id`,
        [
          input.id,
          input.idempotency_key,
          input.request_fingerprint,
          input.source_user_id,
          input.reference,
          input.items.length,
          input.total_amount,
          input.funding_timeout_ms,
          // The creating request's trace, for the webhook deliveries the batch causes (migration 013).
          rowFromContext(),
        ],
      );
      const created = inserted.rowCount === 1;
      if (created) {
        await client.query(
          `INSERT INTO transfers (id, request_fingerprint, source_user_id, dest_user_id, amount_minor, state,
                                  next_attempt_at, created_at, updated_at, disbursement_id, reference, item_index)
           SELECT i.id, $2, $3, i.dest, i.amount, 'funding', 'infinity', now(), now(), $1, i.reference, i.n - 1
             FROM unnest($4::uuid[], $5::bigint[], $6::bigint[], $7::text[]) WITH ORDINALITY
               AS i(id, dest, amount, reference, n)`,
          [
            input.id,
            input.request_fingerprint,
            input.source_user_id,
            input.items.map((i) => i.transfer_id),
            input.items.map((i) => i.dest_user_id),
            input.items.map((i) => i.amount),
            input.items.map((i) => i.reference),
          ],
        );
      }
      const { rows } = await client.query<DisbursementRow & { age_ms: number }>(
        `SELECT ${COLUMNS}, extract(epoch FROM now() - d.created_at) * 1000 AS age_ms
           FROM disbursements d WHERE d.idempotency_key = $1`,
        [input.idempotency_key],
      );
      const row = rows[0];
      assert(row !== undefined, `disbursement with key of ${input.id} vanished`);
      return { created, disbursement: fromRow(row), age_ms: Number(row.age_ms) };
    });
  }

  async get(id: string): Promise<Disbursement | null> {
    const { rows } = await this.#pool.query<DisbursementRow>(
      `SELECT ${COLUMNS} FROM disbursements d WHERE d.id = $1`,
      [id],
    );
    const row = rows[0];
    return row === undefined ? null : fromRow(row);
  }

  /** The items to fund, in order. */
  async items(id: string): Promise<ItemRow[]> {
    const { rows } = await this.#pool.query<{
      id: string;
      item_index: number;
      dest_user_id: string;
      amount_minor: string;
      state: SagaState;
    }>(
      "SELECT id, item_index, dest_user_id, amount_minor, state FROM transfers WHERE disbursement_id = $1 ORDER BY item_index",
      [id],
    );
    return rows.map((r) => ({
      id: r.id,
      item_index: r.item_index,
      dest_user_id: Number(r.dest_user_id),
      amount: minorFromPg(r.amount_minor),
      state: r.state,
    }));
  }

  /**
   * The ledger's answer, applied in one transaction: the disbursement leaves `created` (a
   * compare-and-set: false if another driver applied it first), each item leaves `funding` for
   * `recorded` (debited, its credit next) or, not held (the whole batch refused, or its payee
   * unknown), for `failing` (its FAILED record queued), as a refused single transfer does.
   * `records` builds the items' record commands from their rows as committed.
   */
  async applyFunding(
    id: string,
    outcome: { refused: FailureReason | null; items: readonly ItemFunding[] },
    /** How long a funded item waits for its credit, and a refused one for its FAILED record, before the sweep steps in. */
    waits: { step_ms: number; record_ms: number },
    records: (items: SagaTransfer[]) => OutgoingMessage[],
  ): Promise<boolean> {
    let hooked = false;
    const applied = await withTransaction(this.#pool, async (client) => {
      const moved = await client.query(
        `UPDATE disbursements SET state = $2, failure_reason = $3, updated_at = now()
          WHERE id = $1 AND state = 'created'`,
        [id, outcome.refused === null ? "funded" : "refused", outcome.refused],
      );
      if (moved.rowCount !== 1) return false;
      const { rows } = await client.query<{
        id: string;
        state: SagaState;
        source_user_id: string;
        dest_user_id: string;
        amount_minor: string;
        source_init_bal: string | null;
        failure_reason: FailureReason | null;
        created_at: Date;
        updated_at: Date;
        disbursement_id: string | null;
        item_index: number | null;
        reference: string | null;
      }>(
        `UPDATE transfers t
            SET state = CASE WHEN i.held THEN 'recorded' ELSE 'failing' END,
                failure_reason = i.reason,
                source_init_bal = i.source_init_bal, updated_at = now(), attempts = 0,
                next_attempt_at = now() + ((CASE WHEN i.held THEN $2::float8 ELSE $7::float8 END) * interval '1 millisecond')
           FROM unnest($3::uuid[], $4::boolean[], $5::bigint[], $6::text[]) AS i(id, held, source_init_bal, reason)
          WHERE t.id = i.id AND t.disbursement_id = $1 AND t.state = 'funding'
          RETURNING t.id, t.state, t.source_user_id, t.dest_user_id, t.amount_minor, t.source_init_bal,
                    t.failure_reason, t.created_at, t.updated_at, t.disbursement_id, t.item_index, t.reference`,
        [
          id,
          waits.step_ms,
          outcome.items.map((i) => i.transfer_id),
          outcome.items.map((i) => i.held),
          outcome.items.map((i) => (i.held ? i.source_init_bal : null)),
          outcome.items.map((i) => (i.held ? null : i.reason)),
          waits.record_ms,
        ],
      );
      const items: SagaTransfer[] = rows.map((r) => ({
        id: r.id,
        state: r.state,
        source_user_id: Number(r.source_user_id),
        dest_user_id: Number(r.dest_user_id),
        amount: minorFromPg(r.amount_minor),
        source_init_bal: r.source_init_bal === null ? null : minorFromPg(r.source_init_bal),
        dest_init_bal: null,
        failure_reason: r.failure_reason,
        created_at: r.created_at.toISOString(),
        updated_at: r.updated_at.toISOString(),
        place: placeOf(r),
      }));
      // Only the refused items' (FAILED) records: a funded item's first record is its final one.
      const messages = records(items.filter((t) => t.state === "failing"));
      // An item not held is final now (FAILED): its transfer.failed goes out like any transfer's.
      hooked =
        (await enqueueEvents(
          client,
          items.flatMap((t) => transferEventOf("funding", t) ?? []),
        )) > 0;
      await client.query(
        "INSERT INTO outbox (topic, key, payload) SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[])",
        [
          messages.map((m) => m.topic),
          messages.map((m) => m.key),
          messages.map((m) => JSON.stringify(m.value)),
        ],
      );
      return true;
    });
    if (applied) this.onOutbox();
    if (applied && hooked) this.onWebhooks();
    return applied;
  }

  /** Keep the first answer given for the POST, for replays. */
  async saveResponse(id: string, status: number, body: unknown): Promise<void> {
    await this.#pool.query(
      "UPDATE disbursements SET response_status = $2, response_body = $3 WHERE id = $1 AND response_status IS NULL",
      [id, status, JSON.stringify(body)],
    );
  }

  /** Disbursements left unfunded past their time, claimed (pushed out with backoff) for the sweep. */
  async claimUnfunded(limit: number, backoff: { base_ms: number; cap_ms: number }): Promise<Disbursement[]> {
    const { rows } = await this.#pool.query<DisbursementRow>(
      `UPDATE disbursements d
          SET attempts = d.attempts + 1,
              next_attempt_at = now() + least($3::float8, $2::float8 * power(2, least(d.attempts, 20))) * interval '1 millisecond'
         FROM (SELECT id FROM disbursements WHERE state = 'created' AND next_attempt_at <= now()
                ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) due
        WHERE d.id = due.id
      RETURNING ${COLUMNS}`,
      [limit, backoff.base_ms, backoff.cap_ms],
    );
    return rows.map(fromRow);
  }

  /** A page of items in batch order, optionally of one public status, after the given index. */
  async itemPage(
    id: string,
    page: { limit: number; after_index: number; status: string | null },
  ): Promise<{
    ids: string[];
    references: Map<string, string>;
    last_index: number | null;
    has_more: boolean;
  }> {
    const { rows } = await this.#pool.query<{ id: string; reference: string; item_index: number }>(
      `SELECT id, reference, item_index FROM transfers
        WHERE disbursement_id = $1 AND item_index > $2 AND ($3::text IS NULL OR saga_public_status(state) = $3)
        ORDER BY item_index LIMIT $4`,
      [id, page.after_index, page.status, page.limit + 1],
    );
    const shown = rows.slice(0, page.limit);
    return {
      ids: shown.map((r) => r.id),
      references: new Map(shown.map((r) => [r.id, r.reference])),
      last_index: shown.at(-1)?.item_index ?? null,
      has_more: rows.length > page.limit,
    };
  }

  /**
   * Whether every item is settled (completed or failed: its final record confirmed by the
   * writer), and how many items a page from `after_index` has to show: what a page read from
   * the records must agree with.
   */
  async itemsSettled(
    id: string,
    page: { after_index: number; status: string | null },
  ): Promise<{ settled: boolean; remaining: number }> {
    const { rows } = await this.#pool.query<{ settled: boolean | null; remaining: string }>(
      `SELECT bool_and(state IN ('completed', 'failed')) AS settled,
              count(*) FILTER (WHERE item_index > $2 AND ($3::text IS NULL OR saga_public_status(state) = $3)) AS remaining
         FROM transfers WHERE disbursement_id = $1`,
      [id, page.after_index, page.status],
    );
    const row = rows[0];
    return { settled: row?.settled === true, remaining: Number(row?.remaining ?? 0) };
  }
}
