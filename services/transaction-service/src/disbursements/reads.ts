/**
 * Reads of disbursements, split as the transfer reads are (http.ts): one batch from Redis, else
 * the query service's record (then cached), else the saga's own row (a batch whose record is
 * not written yet, or a query service that cannot answer); a payer's list from Redis, else the
 * query service (503 when it cannot answer). A record event puts the saga's row in the cache
 * and makes the payer's cached lists stale. A settled batch's items: from Redis, else the query
 * service's records (then cached), else the saga's rows.
 */
import type { FastifyBaseLogger } from "fastify";
import { z } from "zod";
import {
  type DisbursementSnapshot,
  disbursementSnapshotSchema,
  type ItemsPage,
  type ItemsQuery,
  itemsPageSchema,
} from "#packages/contracts/disbursement.ts";
import { canonicalCursor, paginationSchema } from "#packages/contracts/pagination.ts";
import { ApiError } from "#packages/http/errors.ts";
import type { Pool } from "#packages/pg/index.ts";
import type { Redis } from "../cache.ts";
import type { QueryClient } from "../query-client.ts";
import { DisbursementCache, type DisbursementCacheOptions } from "./cache.ts";
import { type Disbursement, DisbursementStore } from "./store.ts";

export const disbursementPageSchema = z.object({
  success: z.literal(true),
  data: z.object({ disbursements: z.array(disbursementSnapshotSchema), pagination: paginationSchema }),
});
export type DisbursementPage = z.infer<typeof disbursementPageSchema>;

/** The saga's row as a record snapshot. */
export function snapshotOfRow(d: Disbursement): DisbursementSnapshot {
  return {
    id: d.id,
    version: d.version,
    status: d.status,
    reference: d.reference,
    source_user_id: d.source_user_id,
    item_count: d.item_count,
    total_amount: d.total_amount,
    counts: d.counts,
    amount_completed: d.amount_completed,
    amount_refunded: d.amount_refunded,
    failure_reason: d.failure_reason,
    created_at: d.created_at,
    updated_at: d.updated_at,
  };
}

export class DisbursementReads {
  readonly #cache: DisbursementCache;
  readonly #query: QueryClient;
  readonly #store: DisbursementStore;

  constructor(deps: { cache: DisbursementCache; query: QueryClient; store: DisbursementStore }) {
    this.#cache = deps.cache;
    this.#query = deps.query;
    this.#store = deps.store;
  }

  /** The batch, or null when the saga does not know it. */
  async one(id: string, log: FastifyBaseLogger): Promise<DisbursementSnapshot | null> {
    const cached = await this.#cache.get(id);
    if (cached !== null) return cached;
    try {
      const answer = await this.#query.getDisbursement(id);
      if (answer.status === 200) {
        const snapshot = disbursementSnapshotSchema.parse(
          (answer.body as { data: { disbursement: unknown } }).data.disbursement,
        );
        await this.#cache.put(snapshot);
        return snapshot;
      }
      if (answer.status !== 404)
        log.warn({ status: answer.status }, "query service error; reading the saga row");
    } catch (error) {
      log.warn({ err: error }, "query service unreachable; reading the saga row");
    }
    return this.fromSaga(id);
  }

  /**
   * A page of a settled batch's items from its records (through Redis: such a page never
   * changes), or null when the saga's rows answer: the batch is PENDING or not settled (an item
   * without its final record yet), the query service cannot answer, or its page disagrees with
   * the saga's count of what the page holds (records written before items carried their place).
   */
  async items(d: DisbursementSnapshot, query: ItemsQuery, log: FastifyBaseLogger): Promise<ItemsPage | null> {
    if (d.status === "PENDING") return null;
    const after_index = query.cursor === undefined ? -1 : Number(query.cursor);
    // Keyed by the position, so spellings of one cursor ("7", "007") share a page.
    const page_key = `${query.status ?? ""}:${query.limit}:${after_index}`;
    const cached = itemsPageSchema.safeParse(await this.#cache.getItems(d.id, page_key));
    if (cached.success) return cached.data;
    const expected = await this.#store.itemsSettled(d.id, { after_index, status: query.status ?? null });
    if (!expected.settled) return null;
    const page = await this.#recordsPage(d.id, query, log);
    if (page === null) return null;
    const shown = Math.min(query.limit, expected.remaining);
    if (page.items.length !== shown || page.pagination.has_more !== expected.remaining > query.limit) {
      log.warn(
        { disbursement_id: d.id, served: page.items.length, expected: shown },
        "item records disagree with the saga; reading the saga rows",
      );
      return null;
    }
    await this.#cache.putItems(d.id, page_key, page);
    return page;
  }

  async #recordsPage(id: string, query: ItemsQuery, log: FastifyBaseLogger): Promise<ItemsPage | null> {
    try {
      const answer = await this.#query.listDisbursementItems(id, query);
      const body = z.object({ data: itemsPageSchema }).safeParse(answer.body);
      if (answer.status === 200 && body.success) return body.data.data;
      log.warn(
        { status: answer.status, disbursement_id: id },
        "query service error on items; reading the saga rows",
      );
    } catch (error) {
      log.warn(
        { err: error, disbursement_id: id },
        "query service unreachable on items; reading the saga rows",
      );
    }
    return null;
  }

  /** The saga's own row: where a final status is committed first (waiting reads). */
  async fromSaga(id: string): Promise<DisbursementSnapshot | null> {
    const row = await this.#store.get(id);
    return row === null ? null : snapshotOfRow(row);
  }

  /** A page of the payer's batches: from Redis, else the query service. */
  async page(
    user_id: number,
    query: { limit: number; cursor?: string | undefined },
    log: FastifyBaseLogger,
  ): Promise<DisbursementPage> {
    const cursor = query.cursor === undefined ? null : canonicalCursor(query.cursor);
    const canonical = cursor === null ? { limit: query.limit } : { limit: query.limit, cursor };
    const page_key = `${canonical.limit}:${canonical.cursor ?? ""}`;
    const lookup = await this.#cache.getList(user_id, page_key);
    const cached = disbursementPageSchema.safeParse(lookup.page);
    if (cached.success) return cached.data;
    const unavailable = new ApiError(503, "query_unavailable", "disbursements are temporarily unavailable", {
      headers: { "retry-after": "1" },
    });
    const answer = await this.#query.listPayerDisbursements(user_id, canonical).catch((error: unknown) => {
      log.warn({ err: error }, "query service unreachable on disbursement list");
      throw unavailable;
    });
    const page = disbursementPageSchema.safeParse(answer.body);
    if (answer.status !== 200 || !page.success) {
      log.warn({ status: answer.status }, "query service error on disbursement list");
      throw unavailable;
    }
    await this.#cache.putList(user_id, lookup, page_key, page.data);
    return page.data;
  }

  /**
   * The record of this batch moved: put the saga's row (never the event's content) in the cache,
   * versioned so nothing older replaces it, and make the payer's cached lists stale.
   */
  async recorded(id: string): Promise<void> {
    const row = await this.#store.get(id.toLowerCase());
    if (row === null) return;
    await Promise.all([this.#cache.put(snapshotOfRow(row)), this.#cache.touchPayer(row.source_user_id)]);
  }
}

export function createDisbursementReads(deps: {
  pool: Pool;
  redis: Redis;
  query: QueryClient;
  cache: DisbursementCacheOptions;
}): DisbursementReads {
  return new DisbursementReads({
    cache: new DisbursementCache(deps.redis, deps.cache),
    query: deps.query,
    store: new DisbursementStore(deps.pool),
  });
}
