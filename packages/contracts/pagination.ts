/**
 * Keyset pagination, newest first: the cursor is the (created_at, id) of the last item served,
 * opaque to clients (base64url JSON). Stable under inserts, no OFFSET scans.
 */
import { z } from "zod";

export const PAGE_LIMIT_MAX = 100;
export const PAGE_LIMIT_DEFAULT = 20;

const cursorPayloadSchema = z.object({ t: z.iso.datetime({ offset: true }), id: z.string().min(1).max(64) });
export type Cursor = z.infer<typeof cursorPayloadSchema>;

export function encodeCursor(cursor: Cursor): string {
  return Buffer.from(JSON.stringify(cursor)).toString("base64url");
}

/**
 * The cursor in its one canonical form (time in UTC ISO form, id in lower case), or null when it
 * is not one this API returned: spellings of the same position read, and cache, as one page.
 */
export function decodeCursor(value: string): Cursor | null {
  try {
    const parsed = cursorPayloadSchema.safeParse(
      JSON.parse(Buffer.from(value, "base64url").toString("utf8")),
    );
    if (!parsed.success) return null;
    const t = canonicalTime(parsed.data.t);
    return t === null ? null : { t, id: parsed.data.id.toLowerCase() };
  } catch {
    return null;
  }
}

/**
 * A time in UTC with six fractional digits. Microseconds are PostgreSQL's precision: rows written
 * by one statement share a timestamp down to them, so a cursor cut to JavaScript's milliseconds
 * would skip the rest of such a group.
 */
function canonicalTime(text: string): string | null {
  const m = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:?\d\d)$/i.exec(text);
  if (m?.[1] === undefined || m[3] === undefined) return null;
  const whole = new Date(`${m[1]}${m[3].toUpperCase()}`);
  if (Number.isNaN(whole.getTime())) return null;
  const micros = (m[2] ?? "").padEnd(6, "0").slice(0, 6);
  return `${whole.toISOString().slice(0, 19)}.${micros}Z`;
}

/** The canonical spelling of a cursor (see decodeCursor), or null when it is not a cursor. */
export function canonicalCursor(value: string): string | null {
  const cursor = decodeCursor(value);
  return cursor === null ? null : encodeCursor(cursor);
}

export const listQuerySchema = z.strictObject({
  limit: z.coerce
    .number({ error: `must be an integer from 1 to ${PAGE_LIMIT_MAX}` })
    .int({ error: `must be an integer from 1 to ${PAGE_LIMIT_MAX}` })
    .min(1, { error: `must be an integer from 1 to ${PAGE_LIMIT_MAX}` })
    .max(PAGE_LIMIT_MAX, { error: `must be an integer from 1 to ${PAGE_LIMIT_MAX}` })
    .default(PAGE_LIMIT_DEFAULT),
  cursor: z
    .string()
    .max(512)
    .refine((v) => decodeCursor(v) !== null, { error: "is not a cursor this API returned" })
    .optional(),
});

export const paginationSchema = z.object({
  limit: z.number().int(),
  has_more: z.boolean(),
  next_cursor: z.string().nullable(),
});

/**
 * `?limit=` as it arrives in a query string: digits only, 1..100, default 20. The pattern spells
 * the range out, so the OpenAPI document publishes exactly what is accepted.
 */
export const pageLimitSchema = z
  .string()
  .regex(/^(100|[1-9][0-9]?)$/, { error: `must be an integer from 1 to ${PAGE_LIMIT_MAX}` })
  .transform(Number)
  .pipe(
    z
      .number()
      .int()
      .min(1, { error: "must be at least 1" })
      .max(PAGE_LIMIT_MAX, { error: `must be at most ${PAGE_LIMIT_MAX}` }),
  )
  .default(PAGE_LIMIT_DEFAULT);
