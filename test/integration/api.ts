/** Tiny HTTP helpers for the integration tests: the system under test is reached only through its APIs. */
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";

export const urls = {
  user: process.env.TEST_USER_SERVICE_URL ?? "http://127.0.0.1:18000",
  command: process.env.TEST_COMMAND_SERVICE_URL ?? "http://127.0.0.1:18001",
  query: process.env.TEST_QUERY_SERVICE_URL ?? "http://127.0.0.1:18002",
  transaction: process.env.TEST_TRANSACTION_SERVICE_URL ?? "http://127.0.0.1:18003",
};

export const adminToken = process.env.ADMIN_TOKEN ?? "";
export const serviceToken = process.env.SERVICE_TOKEN ?? "";

export interface Answer {
  status: number;
  headers: Headers;
  // biome-ignore lint/suspicious/noExplicitAny: test assertions navigate free-form JSON
  body: any;
}

export async function call(
  method: string,
  url: string,
  options: { body?: unknown; raw?: string; headers?: Record<string, string> } = {},
): Promise<Answer> {
  const headers: Record<string, string> = { ...options.headers };
  let payload: string | undefined;
  if (options.raw !== undefined) {
    payload = options.raw;
    headers["content-type"] ??= "application/json";
  } else if (options.body !== undefined) {
    payload = JSON.stringify(options.body);
    headers["content-type"] = "application/json";
  }
  const response = await fetch(url, {
    method,
    headers,
    body: payload ?? null,
    signal: AbortSignal.timeout(15_000),
  });
  const text = await response.text();
  return {
    status: response.status,
    headers: response.headers,
    body: text.length > 0 ? JSON.parse(text) : null,
  };
}

let counter = 0;
export function uniqueName(prefix: string): string {
  counter += 1;
  return `${prefix}_${process.pid}_${Date.now().toString(36)}_${counter}`;
}

export async function createUser(balance = 0): Promise<{ id: number; username: string }> {
  const answer = await call("POST", `${urls.user}/users`, {
    body: { username: uniqueName("u"), password: "correct horse battery", balance },
    headers: adminToken ? { authorization: `Bearer ${adminToken}` } : {},
  });
  assert.equal(answer.status, 201, JSON.stringify(answer.body));
  return answer.body.data.user;
}

export async function balanceOf(user_id: number): Promise<number> {
  const answer = await call("GET", `${urls.user}/users/${user_id}`, {
    headers: adminToken ? { authorization: `Bearer ${adminToken}` } : {},
  });
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  return answer.body.data.user.balance;
}

export function transfer(body: unknown, key?: string): Promise<Answer> {
  return call("POST", `${urls.transaction}/transactions/transfer`, {
    body,
    headers: key === undefined ? {} : { "idempotency-key": key },
  });
}

/** Poll the public read API until the transfer leaves PENDING. */
// biome-ignore lint/suspicious/noExplicitAny: free-form JSON
export async function settled(id: string, timeout_ms = 30_000): Promise<any> {
  const deadline = Date.now() + timeout_ms;
  for (;;) {
    const answer = await call("GET", `${urls.transaction}/transactions/${id}`);
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    const transaction = answer.body.data.transaction;
    if (transaction.status !== "PENDING") return transaction;
    if (Date.now() > deadline) assert.fail(`transfer ${id} still PENDING after ${timeout_ms} ms`);
    await sleep(100);
  }
}

/** The ledger's own consistency figures (I1, I2, I6). */
// biome-ignore lint/suspicious/noExplicitAny: free-form JSON
export async function ledgerAudit(): Promise<any> {
  const answer = await call("GET", `${urls.user}/internal/audit`, {
    headers: serviceToken ? { authorization: `Bearer ${serviceToken}` } : {},
  });
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  return answer.body.data;
}
