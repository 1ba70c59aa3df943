/**
 * Outbound JSON calls between services: always with a timeout, never retried here (callers
 * that are idempotent decide how to retry).
 *
 * A plain node:http request on a keep-alive agent, not fetch: a call is one write (headers and
 * body together) on a pooled connection, and its timeout is a timer cleared when the call ends.
 * fetch with AbortSignal.timeout left a timer per call that fired (and built a DOMException) long
 * after the answer, and wrote headers and body separately.
 */
import http from "node:http";
import https from "node:https";
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

/** Open connections per peer (host and port); calls beyond it queue in the agent. */
const SOCKETS_PER_PEER_MAX = 64;
/** Idle connections kept per peer for the next calls. */
const FREE_SOCKETS_PER_PEER_MAX = 16;
/** An answer larger than this is refused (the largest, a ledger batch's, is a few hundred KiB). */
const RESPONSE_BYTES_MAX = 16 * 1024 * 1024;

const agentOptions: http.AgentOptions = {
  keepAlive: true,
  maxSockets: SOCKETS_PER_PEER_MAX,
  maxFreeSockets: FREE_SOCKETS_PER_PEER_MAX,
  // The most recently used connection first: the others go idle and are closed, not kept warm.
  scheduling: "lifo",
};
const agents = { "http:": new http.Agent(agentOptions), "https:": new https.Agent(agentOptions) };

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
  const payload = options.body === undefined ? null : Buffer.from(JSON.stringify(options.body));
  if (payload !== null) {
    headers["content-type"] = "application/json";
    headers["content-length"] = String(payload.length);
  }
  const answer = await exchange(url, options.method, headers, payload, options.timeout_ms);
  let body: unknown = null;
  if (answer.text.length > 0) {
    try {
      body = JSON.parse(answer.text);
    } catch {
      throw new UpstreamError(
        "bad_response",
        `${options.method} ${url} answered ${answer.status} with non-JSON`,
      );
    }
  }
  return { status: answer.status, body };
}

/** One request and its whole answer, within timeout_ms from start to the answer's last byte. */
function exchange(
  url: string,
  method: string,
  headers: Record<string, string>,
  payload: Buffer | null,
  timeout_ms: number,
): Promise<{ status: number; text: string }> {
  const target = new URL(url);
  const transport = target.protocol === "https:" ? https : http;
  const agent = target.protocol === "https:" ? agents["https:"] : agents["http:"];
  return new Promise((resolve, reject) => {
    let settled = false;
    const settle = (error: UpstreamError | null, value?: { status: number; text: string }) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (error === null && value !== undefined) resolve(value);
      else reject(error);
    };
    const request = transport.request(target, { method, headers, agent }, (response) => {
      const chunks: Buffer[] = [];
      let size = 0;
      response.on("data", (chunk: Buffer) => {
        size += chunk.length;
        if (size > RESPONSE_BYTES_MAX) {
          settle(
            new UpstreamError(
              "bad_response",
              `${method} ${url} answered more than ${RESPONSE_BYTES_MAX} bytes`,
            ),
          );
          request.destroy();
          return;
        }
        chunks.push(chunk);
      });
      response.on("end", () =>
        settle(null, { status: response.statusCode ?? 0, text: Buffer.concat(chunks).toString("utf8") }),
      );
      response.on("error", (error) => settle(networkError(method, url, error)));
      response.on("aborted", () => settle(networkError(method, url, new Error("answer cut short"))));
    });
    const timer = setTimeout(() => {
      settle(new UpstreamError("timeout", `${method} ${url} timed out after ${timeout_ms} ms`));
      request.destroy();
    }, timeout_ms);
    request.on("error", (error) => settle(networkError(method, url, error)));
    request.end(payload ?? undefined);
  });
}

function networkError(method: string, url: string, error: Error): UpstreamError {
  return new UpstreamError("network", `${method} ${url} failed: ${error.message}`);
}
