import { assert } from "#packages/runtime/assert.ts";
/**
 * One error shape for every service: the seed's envelope `{success: false, message}` plus a
 * stable machine-readable `code` and optional `details`. Handlers throw ApiError; anything else
 * that escapes is a bug or an engine outage and is answered 500/503 without internals.
 */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly details: Record<string, unknown> | undefined;
  readonly headers: Record<string, string> | undefined;

  constructor(
    status: number,
    code: string,
    message: string,
    extra: { details?: Record<string, unknown>; headers?: Record<string, string> } = {},
  ) {
    super(message);
    assert(status >= 400, `ApiError status ${status} is not an error`);
    assert(status <= 599, `ApiError status ${status} is not an HTTP status`);
    this.status = status;
    this.code = code;
    this.details = extra.details;
    this.headers = extra.headers;
  }
}

export const notFound = (what: string) => new ApiError(404, "not_found", `${what} not found`);

export interface ErrorBody {
  success: false;
  message: string;
  code: string;
  details?: Record<string, unknown>;
}

export function errorBody(code: string, message: string, details?: Record<string, unknown>): ErrorBody {
  return details === undefined
    ? { success: false, message, code }
    : { success: false, message, code, details };
}

export function ok<T>(data: T): { success: true; data: T } {
  return { success: true, data };
}
