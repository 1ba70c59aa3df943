/**
 * Calls to transaction-query-service (the read side), with a timeout on every call and the
 * read side's credential (QUERY_TOKEN) on every call (the query service serves transaction-service
 * and the operator only).
 */
import { callJson, type JsonResponse } from "#packages/http/client.ts";

export class QueryClient {
  readonly #base_url: string;
  readonly #timeout_ms: number;
  readonly #headers: Record<string, string>;

  constructor(base_url: string, query_token: string, timeout_ms: number) {
    this.#base_url = base_url.replace(/\/$/, "");
    this.#timeout_ms = timeout_ms;
    this.#headers = { authorization: `Bearer ${query_token}` };
  }

  getTransfer(id: string): Promise<JsonResponse> {
    return callJson(`${this.#base_url}/transactions/${encodeURIComponent(id)}`, {
      method: "GET",
      timeout_ms: this.#timeout_ms,
      headers: this.#headers,
    });
  }

  getDisbursement(id: string): Promise<JsonResponse> {
    return callJson(`${this.#base_url}/disbursements/${encodeURIComponent(id)}`, {
      method: "GET",
      timeout_ms: this.#timeout_ms,
      headers: this.#headers,
    });
  }

  listPayerDisbursements(
    user_id: number,
    query: { limit: number; cursor?: string | undefined },
  ): Promise<JsonResponse> {
    const params = new URLSearchParams({ limit: String(query.limit) });
    if (query.cursor !== undefined) params.set("cursor", query.cursor);
    return callJson(`${this.#base_url}/disbursements/user/${user_id}?${params}`, {
      method: "GET",
      timeout_ms: this.#timeout_ms,
      headers: this.#headers,
    });
  }

  listUserTransfers(
    user_id: number,
    query: { limit: number; cursor?: string | undefined },
  ): Promise<JsonResponse> {
    const params = new URLSearchParams({ limit: String(query.limit) });
    if (query.cursor !== undefined) params.set("cursor", query.cursor);
    return callJson(`${this.#base_url}/transactions/user/${user_id}?${params}`, {
      method: "GET",
      timeout_ms: this.#timeout_ms,
      headers: this.#headers,
    });
  }
}
