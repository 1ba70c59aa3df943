import { randomBytes } from "node:crypto";
import { z } from "zod";

/**
 * UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then random bits. Time-ordered ids keep
 * the primary-key index of the saga table append-mostly and sort transfers by creation.
 */
export function uuidv7(now_ms: number = Date.now()): string {
  const bytes = randomBytes(16);
  const ts = BigInt(now_ms);
  for (let i = 0; i < 6; i++) bytes[i] = Number((ts >> BigInt(8 * (5 - i))) & 0xffn);
  bytes[6] = ((bytes[6] ?? 0) & 0x0f) | 0x70; // version 7
  bytes[8] = ((bytes[8] ?? 0) & 0x3f) | 0x80; // RFC 4122 variant
  const hex = bytes.toString("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
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
