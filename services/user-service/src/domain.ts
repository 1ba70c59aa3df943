/**
 * Pure logic of user-service: password hashing, input rules, and the mapping from database rows to API shapes (the only place a row becomes a response,
 * so a password hash can never slip into one).
 */
import { randomBytes, scrypt, timingSafeEqual } from "node:crypto";
import { z } from "zod";
import { userIdSchema } from "#packages/contracts/ids.ts";
import type { HoldState } from "#packages/contracts/ledger.ts";
import { assertBalanceMinor, minorFromPg } from "#packages/contracts/money.ts";
import { ApiError } from "#packages/http/errors.ts";
import { assert } from "#packages/runtime/assert.ts";
import { Semaphore, SemaphoreFull } from "#packages/runtime/semaphore.ts";

// ---------------------------------------------------------------------------------------------
// Passwords: scrypt, salted, stored as `scrypt$N$r$p$salt$hash` (base64) so the cost can be
// raised later without breaking stored hashes (a lower-cost hash is rehashed at the next login).

/** OWASP's current guidance for scrypt: N = 2^17, r = 8, p = 1 (128 MiB and ~0.3 s per hash). */
export const SCRYPT_LOG2_N_DEFAULT = 17;
const SCRYPT_R = 8;
const SCRYPT_P = 1;
const SALT_BYTES = 16;
const KEY_BYTES = 32;

function scryptKey(
  password: string,
  salt: Buffer,
  keylen: number,
  cost: { N: number; r: number; p: number },
) {
  return new Promise<Buffer>((resolve, reject) => {
    // maxmem above scrypt's 128*N*r working set, or Node refuses the larger costs we accept.
    const maxmem = 256 * cost.N * cost.r + 1024 * 1024;
    scrypt(password.normalize("NFC"), salt, keylen, { ...cost, maxmem }, (error, key) =>
      error ? reject(error) : resolve(key),
    );
  });
}

export async function hashPassword(
  password: string,
  log2_n: number = SCRYPT_LOG2_N_DEFAULT,
): Promise<string> {
  const salt = randomBytes(SALT_BYTES);
  const cost = { N: 2 ** log2_n, r: SCRYPT_R, p: SCRYPT_P };
  const key = await scryptKey(password, salt, KEY_BYTES, cost);
  return `scrypt$${cost.N}$${cost.r}$${cost.p}$${salt.toString("base64")}$${key.toString("base64")}`;
}

/** Whether a stored hash costs less than `log2_n` asks (then it is rehashed at the next login). */
export function hashBelowCost(stored: string, log2_n: number): boolean {
  const [, n, r, p] = stored.split("$");
  return Number(n) < 2 ** log2_n || Number(r) < SCRYPT_R || Number(p) < SCRYPT_P;
}

export interface PasswordHasherOptions {
  /** log2 of scrypt's N for new hashes (SCRYPT_LOG2_N; 17 in production). */
  log2_n: number;
  /** Hashes computed at once (HASH_CONCURRENCY_MAX): each takes a core and 128*N*r bytes. */
  concurrency_max: number;
  /** Hashes waiting for a slot (HASH_QUEUE_MAX); past that, 503 with Retry-After. */
  queue_max: number;
}

/**
 * scrypt with bounded concurrency: a burst of sign-ups or log-ins waits in a short queue, and
 * past it is refused with 503 at once, so hashing can never take every core (or all memory).
 */
export class PasswordHasher {
  readonly log2_n: number;
  readonly #slots: Semaphore;

  constructor(options: PasswordHasherOptions) {
    this.log2_n = options.log2_n;
    this.#slots = new Semaphore(options.concurrency_max, options.queue_max);
  }

  hash(password: string): Promise<string> {
    return this.#bounded(() => hashPassword(password, this.log2_n));
  }

  verify(password: string, stored: string): Promise<boolean> {
    return this.#bounded(() => verifyPassword(password, stored));
  }

  async #bounded<T>(task: () => Promise<T>): Promise<T> {
    try {
      return await this.#slots.run(task);
    } catch (error) {
      if (!(error instanceof SemaphoreFull)) throw error;
      throw new ApiError(503, "busy", "too many password checks at once; retry shortly", {
        headers: { "retry-after": "1" },
      });
    }
  }
}

/**
 * Checks a password against a stored hash in constant time. A stored value we cannot parse,
 * or whose cost is out of bounds, is corruption, not a wrong password: it throws.
 */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const parts = stored.split("$");
  const [scheme, n, r, p, salt64, key64] = parts;
  const N = Number(n);
  const R = Number(r);
  const P = Number(p);
  const salt = Buffer.from(salt64 ?? "", "base64");
  const expected = Buffer.from(key64 ?? "", "base64");
  const sane =
    parts.length === 6 &&
    scheme === "scrypt" &&
    Number.isInteger(N) &&
    N >= 2 ** 14 &&
    N <= 2 ** 17 &&
    (N & (N - 1)) === 0 &&
    Number.isInteger(R) &&
    R >= 1 &&
    R <= 16 &&
    Number.isInteger(P) &&
    P >= 1 &&
    P <= 4 &&
    salt.length >= 16 &&
    expected.length >= 16 &&
    expected.length <= 64;
  // One condition on purpose: which part of a stored hash is malformed is not for the log.
  assert(sane, "stored password hash is malformed");
  const actual = await scryptKey(password, salt, expected.length, { N, r: R, p: P });
  return timingSafeEqual(actual, expected);
}

// ---------------------------------------------------------------------------------------------
// Input rules (the database repeats the ones that protect data: username shape, money ranges).

export const usernameSchema = z
  .string()
  .regex(/^[A-Za-z0-9_.-]{3,64}$/, { error: "must be 3-64 characters: letters, digits, '_', '.', '-'" });

export const passwordSchema = z
  .string()
  .min(8, { error: "must be at least 8 characters" })
  .max(256, { error: "must be at most 256 characters" });

// ---------------------------------------------------------------------------------------------
// Rows (as node-postgres returns them: bigint as string, timestamptz as Date) and API shapes.

export interface UserRow {
  id: string;
  username: string;
  balance_minor: string;
  created_at: Date;
  updated_at: Date;
}

export interface DepositRow {
  id: string;
  user_id: string;
  amount_minor: string;
  balance_after_minor: string;
  created_at: Date;
}

export interface HoldRow {
  transfer_id: string;
  source_user_id: string;
  dest_user_id: string;
  amount_minor: string;
  state: HoldState;
  source_balance_before_minor: string;
  dest_balance_before_minor: string | null;
  created_at: Date;
  updated_at: Date;
}

/** A database id (bigint, a string from node-postgres) as the API's number. */
export function idFromPg(value: string | number): number {
  return userIdSchema.parse(Number(value));
}

export interface ApiUser {
  id: number;
  username: string;
  balance: number;
  created_at: string;
  updated_at: string;
}

/** Picks fields one by one: whatever else the row holds (a password hash) never leaves. */
export function toApiUser(row: UserRow): ApiUser {
  return {
    id: idFromPg(row.id),
    username: row.username,
    balance: assertBalanceMinor(minorFromPg(row.balance_minor)),
    created_at: row.created_at.toISOString(),
    updated_at: row.updated_at.toISOString(),
  };
}

export function toApiDeposit(row: DepositRow) {
  return {
    id: idFromPg(row.id),
    user_id: idFromPg(row.user_id),
    amount: minorFromPg(row.amount_minor),
    balance_after: assertBalanceMinor(minorFromPg(row.balance_after_minor)),
    created_at: row.created_at.toISOString(),
  };
}

export function toApiHold(row: HoldRow) {
  return {
    transfer_id: row.transfer_id,
    state: row.state,
    source_user_id: idFromPg(row.source_user_id),
    dest_user_id: idFromPg(row.dest_user_id),
    amount: minorFromPg(row.amount_minor),
    source_balance_before: assertBalanceMinor(minorFromPg(row.source_balance_before_minor)),
    dest_balance_before:
      row.dest_balance_before_minor === null
        ? null
        : assertBalanceMinor(minorFromPg(row.dest_balance_before_minor)),
    created_at: row.created_at.toISOString(),
    updated_at: row.updated_at.toISOString(),
  };
}
export type ApiHold = ReturnType<typeof toApiHold>;
