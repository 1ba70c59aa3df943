/**
 * user-service's side of token revocation (see packages/http/token-versions.ts): the version a
 * new token is issued at, the new version a password change or a lock publishes to Redis
 * before its transaction commits, and the wait before such a change is answered.
 *
 * Redis may hold a higher version than the database (a change whose commit failed after its
 * write): new tokens take the higher of the two and a change goes one above both, so such a
 * leftover neither locks the user out nor lets an old token survive the next change.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { ApiError } from "#packages/http/errors.ts";
import {
  readTokenVersion,
  type TokenVersionRedis,
  writeTokenVersion,
} from "#packages/http/token-versions.ts";
import type { Logger } from "#packages/log/index.ts";

export interface RevocationOptions {
  prefix: string;
  timeout_ms: number;
  /** transaction-service's TOKEN_VERSION_CACHE_MS: how long its copies may lag. */
  cache_ms: number;
  /** transaction-service's TOKEN_VERSION_TIMEOUT_MS: how long its read may still be in flight. */
  reader_timeout_ms: number;
  logger: Logger;
}

export class Revocations {
  readonly #redis: TokenVersionRedis;
  readonly #options: RevocationOptions;

  constructor(redis: TokenVersionRedis, options: RevocationOptions) {
    this.#redis = redis;
    this.#options = options;
  }

  /** The version a token issued now carries. Without Redis, the database's (at worst refused later: fail closed). */
  async issueVersion(user_id: number, db_version: number): Promise<number> {
    try {
      return Math.max(db_version, await this.#read(user_id));
    } catch (error) {
      this.#options.logger.warn({ err: error }, "token version unreadable in Redis; issuing the database's");
      return db_version;
    }
  }

  /** Publishes a new, higher version (inside the change's transaction); 503 when Redis does not take it. */
  readonly publish = async (user_id: number, db_version: number): Promise<number> => {
    try {
      const next = Math.max(db_version, await this.#read(user_id)) + 1;
      await writeTokenVersion(this.#redis, this.#options.prefix, user_id, next, this.#options.timeout_ms);
      return next;
    } catch (error) {
      this.#options.logger.warn({ err: error }, "cannot publish a token version; change refused");
      throw new ApiError(
        503,
        "engine_unavailable",
        "cannot revoke the old tokens right now; nothing changed, retry",
        {
          headers: { "retry-after": "1" },
        },
      );
    }
  };

  /**
   * After a change committed: every copy transaction-service may hold was read before the write
   * and expires within cache_ms (plus a read in flight, reader_timeout_ms); only then is the change
   * answered, so the next request after the answer is refused everywhere.
   */
  async settle(): Promise<void> {
    await sleep(this.#options.cache_ms + this.#options.reader_timeout_ms);
  }

  #read(user_id: number): Promise<number> {
    return readTokenVersion(this.#redis, this.#options.prefix, user_id, this.#options.timeout_ms);
  }
}
