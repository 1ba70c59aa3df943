/**
 * Calls to transaction-query-service (the read side), with a timeout on every call and the
 * read side's credential (QUERY_TOKEN) on every call (the query service serves transaction-service
 * and the operator only).
 */
import { callJson, type JsonResponse } from "#packages/http/client.ts";

/** A page of a list: its size, and where the last page ended (absent for the first). */
type PageQuery = { limit: number; cursor?: string | undefined };

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
    return this.#get(`/transactions/${encodeURIComponent(id)}`);
  }

  getDisbursement(id: string): Promise<JsonResponse> {
    return this.#get(`/disbursements/${encodeURIComponent(id)}`);
  }

  listPayerDisbursements(user_id: number, query: PageQuery): Promise<JsonResponse> {
    return this.#get(`/disbursements/user/${user_id}?${pageParams(query)}`);
  }

  /** A page of a batch's item records, in batch order (the cursor is the last item_index served). */
  listDisbursementItems(
    id: string,
    query: PageQuery & { status?: string | undefined },
  ): Promise<JsonResponse> {
    const params = pageParams(query);
    if (query.status !== undefined) params.set("status", query.status);
    return this.#get(`/disbursements/${encodeURIComponent(id)}/items?${params}`);
  }

  listUserTransfers(user_id: number, query: PageQuery): Promise<JsonResponse> {
    return this.#get(`/transactions/user/${user_id}?${pageParams(query)}`);
  }

  #get(path: string): Promise<JsonResponse> {
    return callJson(`${this.#base_url}${path}`, {
      method: "GET",
      timeout_ms: this.#timeout_ms,
      headers: this.#headers,
    });
  }
}

/** A page's query string: its size, and the cursor where one is given. */
function pageParams(query: PageQuery): URLSearchParams {
  const params = new URLSearchParams({ limit: String(query.limit) });
  if (query.cursor !== undefined) params.set("cursor", query.cursor);
  return params;
}
