/**
 * Redis in front of the disbursement records, with the transfers' rules (cache.ts): never the
 * only copy; entries versioned and written with a compare-and-set, so a slow reader cannot put
 * an older snapshot back; what a record event puts in is the saga's own row, never the event's
 * content; lists keyed by a per-payer generation that every record event bumps; TTLs bound the
 * rest. The version (raised by the saga's database on every visible change) plays the part
 * the status rank plays for a transfer.
 */
import type { DisbursementSnapshot } from "#packages/contracts/disbursement.ts";
import type { Logger } from "#packages/log/index.ts";
import { withTimeout } from "#packages/runtime/index.ts";
import {
  type ListKeys,
  type ListLookup,
  lookUpListPage,
  putListPage,
  type Redis,
  SET_IF_NEWER_MANY,
} from "../cache.ts";

export interface DisbursementCacheOptions {
  prefix: string;
  logger: Logger;
  ttl_pending_ms: number;
  ttl_final_ms: number;
  ttl_list_ms: number;
  timeout_ms: number;
}

export class DisbursementCache {
  readonly #redis: Redis;
  readonly #options: DisbursementCacheOptions;

  constructor(redis: Redis, options: DisbursementCacheOptions) {
    this.#redis = redis;
    this.#options = options;
  }

  async get(id: string): Promise<DisbursementSnapshot | null> {
    const value = await this.#safe("get disbursement", () => this.#redis.get(this.#key(id)));
    if (typeof value !== "string") return null;
    return JSON.parse(value.slice(value.indexOf("|") + 1)) as DisbursementSnapshot;
  }

  async put(snapshot: DisbursementSnapshot): Promise<void> {
    const ttl = snapshot.status === "PENDING" ? this.#options.ttl_pending_ms : this.#options.ttl_final_ms;
    await this.#safe("put disbursement", () =>
      this.#redis.eval(SET_IF_NEWER_MANY, {
        keys: [this.#key(snapshot.id)],
        arguments: [String(snapshot.version), JSON.stringify(snapshot), String(ttl)],
      }),
    );
  }

  /** A page of the payer's batches, if cached, and the generation it was looked up under (ListLookup). */
  getList(user_id: number, page_key: string): Promise<ListLookup> {
    return lookUpListPage(this.#redis, this.#listKeys(user_id, page_key), this.#guarded);
  }

  /** Puts a page fetched after `lookup` missed, under the generation the lookup saw. */
  async putList(user_id: number, lookup: ListLookup, page_key: string, body: unknown): Promise<void> {
    await putListPage(this.#redis, this.#listKeys(user_id, page_key), lookup, body, {
      ttl_ms: this.#options.ttl_list_ms,
      guarded: this.#guarded,
    });
  }

  /** A page of a settled batch's items (such pages never change; the TTL of final records). */
  async getItems(id: string, page_key: string): Promise<unknown | null> {
    const value = await this.#safe("get disbursement items", () =>
      this.#redis.get(this.#itemsKey(id, page_key)),
    );
    return typeof value === "string" ? (JSON.parse(value) as unknown) : null;
  }

  async putItems(id: string, page_key: string, page: unknown): Promise<void> {
    await this.#safe("put disbursement items", () =>
      this.#redis.set(this.#itemsKey(id, page_key), JSON.stringify(page), { PX: this.#options.ttl_final_ms }),
    );
  }

  /** A batch of this payer changed: their cached lists are stale from now on. */
  async touchPayer(user_id: number): Promise<void> {
    await this.#safe("touch payer", () => this.#redis.incr(this.#generationKey(user_id)));
  }

  #key(id: string): string {
    return `${this.#options.prefix}disbursement:${id.toLowerCase()}`;
  }

  #itemsKey(id: string, page_key: string): string {
    return `${this.#options.prefix}disbursement-items:${id.toLowerCase()}:${page_key}`;
  }

  #generationKey(user_id: number): string {
    return `${this.#options.prefix}payer-disbursements-gen:${user_id}`;
  }

  #listKeys(user_id: number, page_key: string): ListKeys {
    return {
      generation: this.#generationKey(user_id),
      page: (generation) => `${this.#options.prefix}payer-disbursements:${user_id}:${generation}:${page_key}`,
    };
  }

  readonly #guarded = <T>(what: string, fn: () => Promise<T>): Promise<T | null> =>
    this.#safe(`${what} of disbursements`, fn);

  async #safe<T>(what: string, fn: () => Promise<T>): Promise<T | null> {
    try {
      return await withTimeout(fn(), this.#options.timeout_ms, `redis ${what}`);
    } catch (error) {
      this.#options.logger.warn({ err: error }, `cache ${what} failed; serving without cache`);
      return null;
    }
  }
}
