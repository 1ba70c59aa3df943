/**
 * Redis in front of the query service. Never the only copy of anything: every miss or Redis
 * failure falls through to the query service. Entries are versioned by status rank and written
 * with a compare-and-set script, so a slow reader can never put an older status back over a
 * newer one. What goes in is the saga's own view (written through on every change of public
 * status) or the query service's record, never a snapshot carried by a message: a forged or
 * stale event cannot put anything here. A TTL bounds any staleness that slips through. User
 * lists are keyed by a per-user generation that every record event of that user bumps. Keys
 * are canonical: transfer ids in lower case, list pages by their canonical query.
 */
import { statusRank, type TransferSnapshot } from "#packages/contracts/transfer.ts";
import type { Logger } from "#packages/log/index.ts";
import { Batcher } from "#packages/runtime/batcher.ts";
import { BoundedMap } from "#packages/runtime/bounded-map.ts";
import { withTimeout } from "#packages/runtime/index.ts";

/** The few Redis commands the cache uses (structural, so any node-redis client type fits). */
export interface Redis {
  get(key: string): Promise<string | null>;
  set(key: string, value: string, options: { PX: number }): Promise<unknown>;
  incr(key: string): Promise<unknown>;
  eval(script: string, options: { keys: string[]; arguments: string[] }): Promise<unknown>;
}

/**
 * Versioned entries (`<rank>|<json>`), each set unless its stored rank is higher; several in one
 * call, in order: KEYS[i] gets ARGV[3i-2] (rank), ARGV[3i-1] (JSON) and ARGV[3i] (TTL in ms).
 */
export const SET_IF_NEWER_MANY = `
for i = 1, #KEYS do
  local rank = ARGV[3 * i - 2]
  local current = redis.call('GET', KEYS[i])
  local held = current and tonumber(string.match(current, '^(%d+)|'))
  if not (held and held > tonumber(rank)) then
    redis.call('SET', KEYS[i], rank .. '|' .. ARGV[3 * i - 1], 'PX', ARGV[3 * i])
  end
end
return #KEYS`;

/**
 * Transfers one write-through call puts. Puts made while others are in flight leave together:
 * at a batch's peak a call per transition timed out by the hundred on a busy event loop.
 */
export const PUT_BATCH_MAX = 200;

/**
 * Final transfers this process also keeps (the oldest leaves first). A final status never changes
 * (no transition leaves COMPLETED or FAILED, and parking never turns a decided status back), so a
 * kept copy needs no invalidation, in this copy of the service or any other, and a read of it costs
 * no Redis round trip.
 */
export const FINAL_LOCAL_MAX = 20_000;

/** Entries (transfers, users' list generations) one call invalidates. */
const INVALIDATE_CHUNK_MAX = 500;

/** Drops each entry KEYS[i] whose stored rank is below ARGV[i]; returns how many it dropped. */
export const DELETE_IF_OLDER_MANY = `
local dropped = 0
for i = 1, #KEYS do
  local current = redis.call('GET', KEYS[i])
  local held = current and tonumber(string.match(current, '^(%d+)|'))
  if held and held < tonumber(ARGV[i]) then dropped = dropped + redis.call('DEL', KEYS[i]) end
end
return dropped`;

/**
 * A lookup of one page of an owner's cached list: the page if cached, and the generation of the
 * owner's lists it was looked up under (null when Redis did not answer). A page fetched after a
 * miss is put under that generation, never the current one: when a change bumps the generation
 * while the page is being fetched, the page may already be stale, and it must stay unreachable
 * rather than be served as the new generation's until its TTL.
 */
export type ListLookup = { page: unknown | null; generation: string | null };

/** Where an owner's cached list pages live: its generation's key, and a page's key in a generation. */
export interface ListKeys {
  generation: string;
  page: (generation: string) => string;
}

/** Runs a Redis call, answering null when it fails or runs out of time (each cache's #safe). */
type Guarded = <T>(what: string, fn: () => Promise<T>) => Promise<T | null>;

/** A page of an owner's list under its current generation (users' transfers, payers' batches). */
export async function lookUpListPage(redis: Redis, keys: ListKeys, guarded: Guarded): Promise<ListLookup> {
  const found = await guarded("get list", async () => {
    const generation = (await redis.get(keys.generation)) ?? "0";
    return { generation, value: await redis.get(keys.page(generation)) };
  });
  const value = found?.value;
  return {
    page: typeof value === "string" ? (JSON.parse(value) as unknown) : null,
    generation: found?.generation ?? null,
  };
}

/** Puts a page fetched after `lookup` missed, under the generation the lookup saw. */
export async function putListPage(
  redis: Redis,
  keys: ListKeys,
  lookup: ListLookup,
  body: unknown,
  options: { ttl_ms: number; guarded: Guarded },
): Promise<void> {
  const generation = lookup.generation;
  if (generation === null) return;
  await options.guarded("put list", () =>
    redis.set(keys.page(generation), JSON.stringify(body), { PX: options.ttl_ms }),
  );
}

/** Starts a new generation of each user's cached lists (KEYS: their generation keys). */
const INCR_EACH = `
for i = 1, #KEYS do redis.call('INCR', KEYS[i]) end
return #KEYS`;

export class TransferCache {
  readonly #redis: Redis;
  readonly #prefix: string;
  readonly #logger: Logger;
  readonly #ttl_pending_ms: number;
  readonly #ttl_final_ms: number;
  readonly #ttl_list_ms: number;
  readonly #timeout_ms: number;
  /** Write-through puts, several to a call when they come together (see PUT_BATCH_MAX). */
  readonly #puts: Batcher<TransferSnapshot, null>;
  /** Final transfers by lower-case id, in the order kept (see FINAL_LOCAL_MAX). */
  readonly #finals: BoundedMap<string, Readonly<TransferSnapshot>>;
  readonly #final_local_max: number;
  /** Told of each read: which cache, and whether it was a hit (metrics). */
  onLookup: (cache: "transfer" | "list", hit: boolean) => void = () => {};

  constructor(
    redis: Redis,
    options: {
      prefix: string;
      logger: Logger;
      ttl_pending_ms: number;
      ttl_final_ms: number;
      ttl_list_ms: number;
      timeout_ms: number;
      /** Final transfers kept in this process (default FINAL_LOCAL_MAX; 0 keeps none). */
      final_local_max?: number;
    },
  ) {
    this.#redis = redis;
    this.#prefix = options.prefix;
    this.#logger = options.logger;
    this.#ttl_pending_ms = options.ttl_pending_ms;
    this.#ttl_final_ms = options.ttl_final_ms;
    this.#ttl_list_ms = options.ttl_list_ms;
    this.#timeout_ms = options.timeout_ms;
    this.#final_local_max = options.final_local_max ?? FINAL_LOCAL_MAX;
    this.#finals = new BoundedMap(Math.max(1, this.#final_local_max));
    this.#puts = new Batcher({
      name: "cache puts",
      batch_max: PUT_BATCH_MAX,
      in_flight_max: 2,
      waiting_max: 10_000,
      run: (snapshots) => this.#putMany(snapshots),
    });
  }

  /** The transfer, if cached; a final one from this process when it has it. Never to be mutated. */
  async getTransfer(id: string): Promise<Readonly<TransferSnapshot> | null> {
    const kept = this.#finals.get(id.toLowerCase());
    if (kept !== undefined) {
      this.onLookup("transfer", true);
      return kept;
    }
    const value = await this.#safe("get", () => this.#redis.get(this.#transferKey(id)));
    this.onLookup("transfer", typeof value === "string");
    if (typeof value !== "string") return null;
    const separator = value.indexOf("|");
    const snapshot = JSON.parse(value.slice(separator + 1)) as TransferSnapshot;
    this.#keepFinal(snapshot);
    return snapshot;
  }

  #keepFinal(snapshot: TransferSnapshot): void {
    if (snapshot.status === "PENDING" || this.#final_local_max === 0) return;
    const key = snapshot.id.toLowerCase();
    if (this.#finals.has(key)) return;
    this.#finals.set(key, Object.freeze({ ...snapshot }));
  }

  /** Never throws: a put that cannot be made leaves the entry to its TTL and the invalidations. */
  async putTransfer(snapshot: TransferSnapshot): Promise<void> {
    this.#keepFinal(snapshot);
    await this.#puts.submit(snapshot).catch((error: unknown) => {
      // Only a full queue lands here (a put's own failure is logged by #safe).
      this.#logger.warn({ err: error }, "cache put failed; serving without cache");
    });
  }

  async #putMany(snapshots: TransferSnapshot[]): Promise<null[]> {
    const args = snapshots.flatMap((snapshot) => [
      String(statusRank(snapshot.status)),
      JSON.stringify(snapshot),
      String(snapshot.status === "PENDING" ? this.#ttl_pending_ms : this.#ttl_final_ms),
    ]);
    await this.#safe("put", () =>
      this.#redis.eval(SET_IF_NEWER_MANY, {
        keys: snapshots.map((snapshot) => this.#transferKey(snapshot.id)),
        arguments: args,
      }),
    );
    return snapshots.map(() => null);
  }

  /**
   * The saga holds this transfer at `status`: drop a cached entry that is behind it (e.g. a read
   * that cached the record while the record lagged the saga), so the next read fetches afresh.
   */
  async invalidateOlder(
    transfers: ReadonlyArray<{ id: string; status: TransferSnapshot["status"] }>,
  ): Promise<void> {
    // One call per bounded chunk, each with the timeout one command would have.
    for (let from = 0; from < transfers.length; from += INVALIDATE_CHUNK_MAX) {
      const chunk = transfers.slice(from, from + INVALIDATE_CHUNK_MAX);
      await this.#safe("invalidate", () =>
        this.#redis.eval(DELETE_IF_OLDER_MANY, {
          keys: chunk.map((t) => this.#transferKey(t.id)),
          arguments: chunk.map((t) => String(statusRank(t.status))),
        }),
      );
    }
  }

  /** A page of the user's transfers, if cached, and the generation it was looked up under. */
  async getList(user_id: number, page_key: string): Promise<ListLookup> {
    const lookup = await lookUpListPage(this.#redis, this.#listKeys(user_id, page_key), this.#guarded);
    this.onLookup("list", lookup.page !== null);
    return lookup;
  }

  /** Puts a page fetched after `lookup` missed, under the generation the lookup saw. */
  async putList(user_id: number, lookup: ListLookup, page_key: string, body: unknown): Promise<void> {
    await putListPage(this.#redis, this.#listKeys(user_id, page_key), lookup, body, {
      ttl_ms: this.#ttl_list_ms,
      guarded: this.#guarded,
    });
  }

  /** A transfer of these users changed: their cached lists are stale from now on. */
  async touchUsers(user_ids: number[]): Promise<void> {
    // One call per bounded chunk (as invalidateOlder).
    const users = [...new Set(user_ids)];
    for (let from = 0; from < users.length; from += INVALIDATE_CHUNK_MAX) {
      const chunk = users.slice(from, from + INVALIDATE_CHUNK_MAX);
      await this.#safe("touch users", () =>
        this.#redis.eval(INCR_EACH, { keys: chunk.map((id) => this.#generationKey(id)), arguments: [] }),
      );
    }
  }

  /** One entry per transfer, however its id is spelled: ids are compared in lower case everywhere. */
  #transferKey(id: string): string {
    return `${this.#prefix}transfer:${id.toLowerCase()}`;
  }

  #generationKey(user_id: number): string {
    return `${this.#prefix}user-transfers-gen:${user_id}`;
  }

  #listKeys(user_id: number, page_key: string): ListKeys {
    return {
      generation: this.#generationKey(user_id),
      page: (generation) => `${this.#prefix}user-transfers:${user_id}:${generation}:${page_key}`,
    };
  }

  readonly #guarded: Guarded = (what, fn) => this.#safe(what, fn);

  async #safe<T>(what: string, fn: () => Promise<T>): Promise<T | null> {
    try {
      return await withTimeout(fn(), this.#timeout_ms, `redis ${what}`);
    } catch (error) {
      this.#logger.warn({ err: error }, `cache ${what} failed; serving without cache`);
      return null;
    }
  }
}
