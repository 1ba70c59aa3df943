import { randomUUID } from "node:crypto";
import { z } from "zod";

/**
 * UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then random bits. Time-ordered ids keep
 * the primary-key index of the saga table append-mostly and sort transfers by creation. The
 * random bits are a v4 UUID's (its 74 random bits in the same places, the version nibble made 7):
 * Node draws those from a buffer it refills in bulk, where randomBytes(16) asked the kernel for
 * every id (0.9% of transaction-service's busy time in a benchmark profile).
 */
export function uuidv7(now_ms: number = Date.now()): string {
  const ms = now_ms.toString(16).padStart(12, "0");
  const v4 = randomUUID();
  return `${ms.slice(0, 8)}-${ms.slice(8, 12)}-7${v4.slice(15, 18)}-${v4.slice(19)}`;
}

/**
 * A transfer id, in lower case whatever case it arrived in: UUIDs are equal whatever the case of
 * their hex digits (PostgreSQL compares them so), and every key, cache entry, record id and
 * duplicate check built from a parsed id then agrees with the database without lower-casing it.
 */
export const transferIdSchema = z
  .uuid({ error: "must be a transfer id (UUID)" })
  .overwrite((id) => id.toLowerCase());

/** User ids are positive integers (PostgreSQL bigserial), validated before any query. */
export const userIdSchema = z
  .number({ error: "must be a user id (a positive integer)" })
  .int({ error: "must be a user id (a positive integer)" })
  .positive({ error: "must be a user id (a positive integer)" })
  .max(Number.MAX_SAFE_INTEGER, { error: "must be a user id (a positive integer)" });

/**
 * The same id as it appears in a URL path: digits only, so "1e3", " 7" or "0x10" are refused.
 * At most 15 digits, so that every string the pattern (as published in the OpenAPI document)
 * admits is also a safe integer.
 */
export const userIdParamSchema = z
  .string()
  .regex(/^[1-9][0-9]{0,14}$/, { error: "must be a user id (a positive integer)" })
  .transform(Number)
  .pipe(userIdSchema);

/** Idempotency keys: what clients usually send (UUIDs, ULIDs, hashes), printable ASCII. */
export const idempotencyKeySchema = z
  .string()
  .regex(/^[\x21-\x7e]{1,255}$/, { error: "must be 1-255 printable ASCII characters without spaces" });
