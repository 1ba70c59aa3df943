/**
 * Users' token versions, shared through Redis so that every service that verifies access tokens
 * refuses a revoked one.
 *
 * user-service owns the version (a column on users): a password change or a lock raises it, and
 * an access token carries the version it was issued at (`ver`). A token below the current
 * version is revoked. user-service checks its own database; transaction-service reads the copy
 * user-service writes to Redis (`<prefix>token_version:<user id>`, no expiry) and keeps it in
 * process for at most TOKEN_VERSION_CACHE_MS, so the hot path costs one Redis read per user per
 * interval, not per request. user-service waits that long after writing a new version before it
 * answers the change, so the next request after the answer is refused everywhere.
 *
 * A version that cannot be read (Redis away) refuses the request with 503: a revoked token must
 * not pass because the revocation could not be seen.
 */

import { assert } from "#packages/runtime/assert.ts";
import { BoundedMap } from "#packages/runtime/bounded-map.ts";
import { withTimeout } from "#packages/runtime/index.ts";
import type { TokenVersions } from "./auth.ts";
import { ApiError } from "./errors.ts";

/** The Redis commands used here (structural, so any node-redis client fits). */
export interface TokenVersionRedis {
  get(key: string): Promise<string | null>;
  set(key: string, value: string): Promise<unknown>;
}

export const tokenVersionKey = (prefix: string, user_id: number): string =>
  `${prefix}token_version:${user_id}`;

/** The version in Redis (0 when none was ever written), or a thrown error. */
export async function readTokenVersion(
  redis: TokenVersionRedis,
  prefix: string,
  user_id: number,
  timeout_ms: number,
): Promise<number> {
  const text = await withTimeout(
    redis.get(tokenVersionKey(prefix, user_id)),
    timeout_ms,
    "token version read",
  );
  if (text === null) return 0;
  const version = Number(text);
  assert(Number.isSafeInteger(version), `token version ${text} must be a safe integer`);
  assert(version >= 0, `token version ${text} must not be negative`);
  return version;
}

export async function writeTokenVersion(
  redis: TokenVersionRedis,
  prefix: string,
  user_id: number,
  version: number,
  timeout_ms: number,
): Promise<void> {
  await withTimeout(
    redis.set(tokenVersionKey(prefix, user_id), String(version)),
    timeout_ms,
    "token version write",
  );
}

export interface CachedTokenVersionOptions {
  prefix: string;
  /** How long a read version is trusted (TOKEN_VERSION_CACHE_MS); 0 reads Redis every time. */
  cache_ms: number;
  timeout_ms: number;
  /** Most users remembered; the oldest entry goes first. */
  entries_max?: number;
}

/** transaction-service's view: the Redis copy, remembered briefly, with concurrent reads of one user shared. */
export class CachedTokenVersions implements TokenVersions {
  readonly #redis: TokenVersionRedis;
  readonly #options: Required<CachedTokenVersionOptions>;
  readonly #known: BoundedMap<number, { version: number; read_at_ms: number }>;
  readonly #reading = new Map<number, Promise<number>>();

  constructor(redis: TokenVersionRedis, options: CachedTokenVersionOptions) {
    this.#redis = redis;
    this.#options = { entries_max: 100_000, ...options };
    this.#known = new BoundedMap(this.#options.entries_max);
  }

  async current(user_id: number): Promise<number> {
    const known = this.#known.get(user_id);
    // Stamped when the read was sent: an entry never outlives a write it could have missed by
    // more than cache_ms.
    if (known !== undefined && Date.now() - known.read_at_ms < this.#options.cache_ms) return known.version;
    const pending = this.#reading.get(user_id);
    if (pending !== undefined) return pending;
    const read = this.#read(user_id).finally(() => this.#reading.delete(user_id));
    this.#reading.set(user_id, read);
    return read;
  }

  async #read(user_id: number): Promise<number> {
    const read_at_ms = Date.now();
    let version: number;
    try {
      version = await readTokenVersion(this.#redis, this.#options.prefix, user_id, this.#options.timeout_ms);
    } catch {
      throw new ApiError(
        503,
        "engine_unavailable",
        "cannot check whether this token was revoked; retry later",
        {
          headers: { "retry-after": "1" },
        },
      );
    }
    this.#known.set(user_id, { version, read_at_ms });
    return version;
  }
}
