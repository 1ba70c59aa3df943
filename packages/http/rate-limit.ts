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
 *
 * Quota is taken from Redis in leases, not one request at a time: a subject's first request in a
 * window reserves 1, and each lease used up reserves twice the last, up to max/16 (at most 64),
 * so a busy subject costs a few round trips per window instead of one per request (a reader
 * polling at a thousand requests a second made one Redis call each). Redis counts the quota
 * reserved, and a lease that would pass `max` gets only the part below it, so no more than `max`
 * requests per window are let through whatever the number of instances; an instance's unused
 * lease at the window's end can only refuse others early (at most max/16 per instance). A subject
 * found over the limit is refused locally for the rest of the window: counts never go down.
 */
import type { FastifyReply } from "fastify";
import type { Logger } from "#packages/log/index.ts";
import { assert } from "#packages/runtime/assert.ts";
import { BoundedMap } from "#packages/runtime/bounded-map.ts";
import { withTimeout } from "#packages/runtime/index.ts";
import type { Authenticator, Principal, PrincipalKind } from "./auth.ts";
import { ApiError } from "./errors.ts";

/** The Redis commands the limiter uses (structural, so any node-redis client fits). */
export interface RateLimitRedis {
  eval(script: string, options: { keys: string[]; arguments: string[] }): Promise<unknown>;
  del(key: string): Promise<unknown>;
}

// One round trip: reserve ARGV[2] requests in the window, and start its expiry on the first.
const RESERVE = `
local n = redis.call('INCRBY', KEYS[1], ARGV[2])
if n == tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n`;

/** The largest lease: max/16 of the limit, and never more than this. */
const LEASE_MAX = 64;
/** Subjects whose leases an instance keeps (the oldest forgotten first: a reservation more). */
const LEASES_KEPT_MAX = 50_000;

/** An instance's share of one subject's quota in one window. */
interface Lease {
  window: number;
  /** Requests this instance may let through in the window without asking Redis. */
  granted: number;
  used: number;
  /** Redis's count at the last reservation: every instance's reservations in the window. */
  reserved_total: number;
  next_size: number;
}

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
  readonly #lease_max: number;
  readonly #leases = new BoundedMap<string, Lease>(LEASES_KEPT_MAX);
  #last_warning_ms = 0;

  constructor(redis: RateLimitRedis, options: RateLimitOptions) {
    assert(Number.isInteger(options.max), "rate limit must be an integer");
    assert(options.max >= 0, "rate limit must not be negative");
    assert(Number.isInteger(options.window_ms), "rate limit window must be an integer");
    assert(options.window_ms >= 1, "rate limit window must be at least 1 ms");
    this.#redis = redis;
    this.#options = options;
    this.#lease_max = Math.max(1, Math.min(LEASE_MAX, Math.floor(options.max / 16)));
  }

  get enabled(): boolean {
    return this.#options.max > 0;
  }

  /** Count one request of `subject`; null when the limit is off or Redis did not answer. */
  async take(subject: string, now_ms: number = Date.now()): Promise<RateDecision | null> {
    const { max, window_ms } = this.#options;
    if (max === 0) return null;
    const window = Math.floor(now_ms / window_ms);
    const reset_ms = (window + 1) * window_ms - now_ms;
    const kept = this.#leases.get(subject);
    let lease: Lease | null = kept?.window === window ? kept : null;
    if (lease === null || (lease.used >= lease.granted && lease.reserved_total < max)) {
      lease = await this.#reserve(subject, window, lease);
      if (lease === null) return null;
    }
    const allowed = lease.used < lease.granted;
    if (allowed) lease.used += 1;
    const remaining = Math.max(0, max - lease.reserved_total) + (lease.granted - lease.used);
    return { allowed, limit: max, remaining, reset_ms };
  }

  /** A lease from Redis, added to the window's lease (requests that asked side by side share it); null when Redis did not answer. */
  async #reserve(subject: string, window: number, earlier: Lease | null): Promise<Lease | null> {
    const { max, window_ms, timeout_ms } = this.#options;
    const size = Math.min(earlier?.next_size ?? 1, this.#lease_max);
    let total: number;
    try {
      // The key outlives its window a little, so an instance whose clock lags still finds it.
      const answer = await withTimeout(
        this.#redis.eval(RESERVE, {
          keys: [this.#key(subject, window)],
          arguments: [String(window_ms + 2_000), String(size)],
        }),
        timeout_ms,
        "rate limit",
      );
      total = Number(answer);
      if (!Number.isSafeInteger(total) || total < size) throw new Error(`unexpected INCRBY answer ${answer}`);
    } catch (error) {
      const now = Date.now();
      if (now - this.#last_warning_ms > 10_000) {
        this.#last_warning_ms = now;
        this.#options.logger.warn({ err: error }, "rate limit unavailable (Redis); letting requests through");
      }
      return null;
    }
    // The part of this reservation at or below max: [total - size + 1, total] ∩ [1, max].
    const granted = Math.max(0, Math.min(size, max - (total - size)));
    const current = this.#leases.get(subject);
    const lease: Lease =
      current?.window === window ? current : { window, granted: 0, used: 0, reserved_total: 0, next_size: 1 };
    lease.granted += granted;
    lease.reserved_total = Math.max(lease.reserved_total, total);
    lease.next_size = Math.min(size * 2, this.#lease_max);
    if (current !== lease) this.#leases.set(subject, lease);
    return lease;
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
    this.#leases.delete(subject);
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
