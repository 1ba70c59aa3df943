/**
 * The load generator's errors by kind, so that a run says what went wrong and not only how often:
 * an answer's HTTP status ("HTTP 503"), or a failed call's error code ("ECONNRESET", "TIMEOUT").
 * Bounded: the first ERROR_KINDS_MAX kinds are named, any later kind counts as "other".
 */

/** Count per kind; a plain record, so that it goes into results.json as it is. */
export type ErrorKinds = Record<string, number>;

export const ERROR_KINDS_MAX = 10;
export const OTHER_KIND = "other";

/** The kind of an answer the run did not expect. */
export const statusKind = (status: number): string => `HTTP ${status}`;

/** The kind of a call that failed without an answer: its code (Node's network errors have one), else its name. */
export function errorKind(error: unknown): string {
  if (!(error instanceof Error)) return typeof error;
  const code = (error as { code?: unknown }).code;
  return typeof code === "string" && code !== "" ? code : error.name;
}

/** One more error of `kind` in `kinds`, under "other" once ERROR_KINDS_MAX kinds are named. */
export function countError(kinds: ErrorKinds, kind: string): void {
  const named = Object.keys(kinds).filter((k) => k !== OTHER_KIND).length;
  const key = Object.hasOwn(kinds, kind) || named < ERROR_KINDS_MAX ? kind : OTHER_KIND;
  // Own properties only: a kind may be named like one of Object's ("constructor").
  kinds[key] = (Object.hasOwn(kinds, key) ? (kinds[key] ?? 0) : 0) + 1;
}

/** "HTTP 503 ×5, ECONNRESET ×1": the most frequent first, "other" last; "" when there are none. */
export function formatErrorKinds(kinds: ErrorKinds | undefined): string {
  const order = ([a, m]: [string, number], [b, n]: [string, number]): number =>
    Number(a === OTHER_KIND) - Number(b === OTHER_KIND) || n - m || a.localeCompare(b);
  return Object.entries(kinds ?? {})
    .sort(order)
    .map(([kind, count]) => `${kind} ×${count}`)
    .join(", ");
}

/** "3 errors (HTTP 503 ×2, TIMEOUT ×1)", or "0 errors"; kinds are absent in results written before they were counted. */
export function errorsSaid(errors: number, kinds: ErrorKinds | undefined): string {
  const said = formatErrorKinds(kinds);
  return said === "" ? `${errors} errors` : `${errors} errors (${said})`;
}

/**
 * Markdown lines under a table: each row's errors by kind, for the rows that had any; nothing
 * when none had.
 */
export function errorKindsLines(rows: Array<{ label: string; said: string }>): string[] {
  const with_errors = rows.filter((row) => row.said !== "");
  if (with_errors.length === 0) return [];
  return [
    "Errors by kind (the errors column also counts transfers not seen final in time):",
    "",
    ...with_errors.map((row) => `- ${row.label}: ${row.said}`),
    "",
  ];
}
