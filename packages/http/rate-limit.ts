/**
 * Rate limits kept in Redis, so every instance of a service shares one count: a fixed window
 * (`window_ms`) of at most `max` requests per subject; over it, 429 with Retry-After (seconds
 * until the window ends). Every limited answer carries RateLimit-Limit, RateLimit-Remaining and
 * RateLimit-Reset (IETF draft names). transaction-service limits each user's requests
 * (RATE_LIMIT_MAX per RATE_LIMIT_WINDOW_MS); user-service limits log-ins and sign-ups per client
 * address and per username.
 *
 * Redis is a cache here, never a gate: when it does not answer in time, the request is let
 * through (logged), so a Redis outage degrades the limit, not the payments.
 */
import type { FastifyReply } from "fastify";
import type { Logger } from "#packages/log/index.ts";
import { assert } from "#packages/runtime/assert.ts";
import { withTimeout } from "#packages/runtime/index.ts";
import type { Authenticator, Principal, PrincipalKind } from "./auth.ts";
import { ApiError } from "./errors.ts";

/** The Redis commands the limiter uses (structural, so any node-redis client fits). */
export interface RateLimitRedis {
  eval(script: string, options: { keys: string[]; arguments: string[] }): Promise<unknown>;
  del(key: string): Promise<unknown>;
}

// One round trip: count this request in its window, and start the window's expiry on its first.
const COUNT = `
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n`;

export interface RateLimitOptions {
  prefix: string;
  /** Requests per window per subject; 0 turns the limit off. */
  max: number;
  window_ms: number;
  timeout_ms: number;
  logger: Logger;
  /** What one subject is, for the 429's message ("user", "client address"...). */
  per?: string;
}

export interface RateDecision {
  allowed: boolean;
  limit: number;
  remaining: number;
  /** Milliseconds until the current window ends. */
  reset_ms: number;
}

/** A 429 from a limiter; `limit` names what it counts per (a bounded metric label). */
export class RateLimitedError extends ApiError {
  readonly limit: string;
  constructor(limit: string, message: string, headers: Record<string, string>) {
    super(429, "rate_limited", message, { headers });
    this.limit = limit;
  }
}

export class RateLimiter {
  readonly #redis: RateLimitRedis;
  readonly #options: RateLimitOptions;
  #last_warning_ms = 0;

  constructor(redis: RateLimitRedis, options: RateLimitOptions) {
    assert(Number.isInteger(options.max), "rate limit must be an integer");
    assert(options.max >= 0, "rate limit must not be negative");
    assert(Number.isInteger(options.window_ms), "rate limit window must be an integer");
    assert(options.window_ms >= 1, "rate limit window must be at least 1 ms");
    this.#redis = redis;
    this.#options = options;
  }

  get enabled(): boolean {
    return this.#options.max > 0;
  }

  /** Count one request of `subject`; null when the limit is off or Redis did not answer. */
  async take(subject: string, now_ms: number = Date.now()): Promise<RateDecision | null> {
    const { max, window_ms, timeout_ms } = this.#options;
    if (max === 0) return null;
    const window = Math.floor(now_ms / window_ms);
    const reset_ms = (window + 1) * window_ms - now_ms;
    const key = this.#key(subject, window);
    let count: number;
    try {
      // The key outlives its window a little, so an instance whose clock lags still finds it.
      const answer = await withTimeout(
        this.#redis.eval(COUNT, { keys: [key], arguments: [String(window_ms + 2_000)] }),
        timeout_ms,
        "rate limit",
      );
      count = Number(answer);
      if (!Number.isSafeInteger(count) || count < 1) throw new Error(`unexpected INCR answer ${answer}`);
    } catch (error) {
      const now = Date.now();
      if (now - this.#last_warning_ms > 10_000) {
        this.#last_warning_ms = now;
        this.#options.logger.warn({ err: error }, "rate limit unavailable (Redis); letting requests through");
      }
      return null;
    }
    return { allowed: count <= max, limit: max, remaining: Math.max(0, max - count), reset_ms };
  }

  #key(subject: string, window: number): string {
    return `${this.#options.prefix}ratelimit:${subject}:${window}`;
  }

  /**
   * Counts one request of `subject`: over the limit, a 429 with Retry-After; otherwise the
   * RateLimit-* headers for the answer (none when the limit is off or Redis did not answer).
   */
  async enforce(subject: string): Promise<Record<string, string>> {
    const decision = await this.take(subject);
    if (decision === null) return {};
    const reset_s = Math.max(1, Math.ceil(decision.reset_ms / 1000));
    const headers = {
      "ratelimit-limit": String(decision.limit),
      "ratelimit-remaining": String(decision.remaining),
      "ratelimit-reset": String(reset_s),
    };
    if (!decision.allowed) {
      const per = this.#options.per ?? "user";
      throw new RateLimitedError(
        per,
        `too many requests: at most ${decision.limit} per ${this.#options.window_ms} ms per ${per}`,
        { ...headers, "retry-after": String(reset_s) },
      );
    }
    return headers;
  }

  /** Forgets the current window's count of `subject` (a success ends a run of failures); best effort. */
  async reset(subject: string, now_ms: number = Date.now()): Promise<void> {
    if (!this.enabled) return;
    const window = Math.floor(now_ms / this.#options.window_ms);
    try {
      await withTimeout(
        this.#redis.del(this.#key(subject, window)),
        this.#options.timeout_ms,
        "rate limit reset",
      );
    } catch (error) {
      this.#options.logger.warn({ err: error }, "rate limit reset failed (Redis)");
    }
  }

  /**
   * The authentication guard for `kinds` and this limit in one onRequest hook: limits each user
   * (by their token's subject); the operator and services are not limited. The user's count is
   * taken while their token's revocation is checked, so the two Redis round trips of a request
   * become one (the client sends both commands in one write).
   */
  guard(auth: Authenticator, ...kinds: PrincipalKind[]) {
    return auth.guardWith(kinds, (principal, reply) => this.#limit(principal, reply));
  }

  async #limit(principal: Principal | null, reply: FastifyReply): Promise<void> {
    if (principal?.kind !== "user" || !this.enabled) return;
    reply.headers(await this.enforce(`user:${principal.user_id}`));
  }
}
