/**
 * Outbound JSON calls between services: always with a timeout, never retried here (callers
 * that are idempotent decide how to retry). Keep-alive connections come from Node's global
 * fetch dispatcher, so there is no connect-per-call.
 */
import { injectHttpHeaders } from "#packages/tracing/carriers.ts";

export interface JsonResponse {
  status: number;
  body: unknown;
}

export class UpstreamError extends Error {
  readonly cause_kind: "timeout" | "network" | "bad_response";
  constructor(cause_kind: "timeout" | "network" | "bad_response", message: string) {
    super(message);
    this.cause_kind = cause_kind;
  }
}

export async function callJson(
  url: string,
  options: {
    method: "GET" | "POST" | "PUT" | "DELETE";
    body?: unknown;
    timeout_ms: number;
    headers?: Record<string, string>;
  },
): Promise<JsonResponse> {
  // The active trace continues in the callee (nothing is added while tracing is off).
  const headers = injectHttpHeaders<Record<string, string>>({
    accept: "application/json",
    ...options.headers,
  });
  if (options.body !== undefined) headers["content-type"] = "application/json";
  let response: Response;
  try {
    response = await fetch(url, {
      method: options.method,
      headers,
      body: options.body === undefined ? null : JSON.stringify(options.body),
      signal: AbortSignal.timeout(options.timeout_ms),
    });
  } catch (error) {
    const name = (error as Error).name;
    if (name === "TimeoutError" || name === "AbortError") {
      throw new UpstreamError("timeout", `${options.method} ${url} timed out after ${options.timeout_ms} ms`);
    }
    throw new UpstreamError("network", `${options.method} ${url} failed: ${(error as Error).message}`);
  }
  const text = await response.text();
  let body: unknown = null;
  if (text.length > 0) {
    try {
      body = JSON.parse(text);
    } catch {
      throw new UpstreamError(
        "bad_response",
        `${options.method} ${url} answered ${response.status} with non-JSON`,
      );
    }
  }
  return { status: response.status, body };
}
