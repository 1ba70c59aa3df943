/** Tiny HTTP helpers for the integration tests: the system under test is reached only through its APIs. */
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";

export const urls = {
  user: process.env.TEST_USER_SERVICE_URL ?? "http://127.0.0.1:18000",
  command: process.env.TEST_COMMAND_SERVICE_URL ?? "http://127.0.0.1:18001",
  query: process.env.TEST_QUERY_SERVICE_URL ?? "http://127.0.0.1:18002",
  transaction: process.env.TEST_TRANSACTION_SERVICE_URL ?? "http://127.0.0.1:18003",
};

/** The internal listeners (loopback, public port + 1000): ledger steps, audit, /ops/*, health details. */
export const internalUrls = {
  user: process.env.TEST_USER_SERVICE_INTERNAL_URL ?? "http://127.0.0.1:19000",
  command: process.env.TEST_COMMAND_SERVICE_INTERNAL_URL ?? "http://127.0.0.1:19001",
  query: process.env.TEST_QUERY_SERVICE_INTERNAL_URL ?? "http://127.0.0.1:19002",
  transaction: process.env.TEST_TRANSACTION_SERVICE_INTERNAL_URL ?? "http://127.0.0.1:19003",
};

export const adminToken = process.env.ADMIN_TOKEN ?? "";
/** transaction-service's credentials, for the tests that check who else the ledger and read side refuse. */
export const ledgerToken = process.env.LEDGER_TOKEN ?? "";
export const queryToken = process.env.QUERY_TOKEN ?? "";
if (adminToken === "" || ledgerToken === "" || queryToken === "") {
  throw new Error(
    "the integration tests need ADMIN_TOKEN, LEDGER_TOKEN and QUERY_TOKEN (as the stack generated them)",
  );
}

/** `Authorization: Bearer <token>` as a header map. */
export function bearer(token: string): Record<string, string> {
  return { authorization: `Bearer ${token}` };
}
export const asAdmin = (): Record<string, string> => bearer(adminToken);
export const asLedger = (): Record<string, string> => bearer(ledgerToken);
export const asQuery = (): Record<string, string> => bearer(queryToken);

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

export const PASSWORD = "correct horse battery";

export interface TestUser {
  id: number;
  username: string;
  /** A fresh access token of this user (from POST /auth/login). */
  token: string;
}

/** Public sign-up (an empty wallet), an operator deposit when `balance` > 0, then a login. */
export async function createUser(balance = 0): Promise<TestUser> {
  const username = uniqueName("u");
  const signUp = await call("POST", `${urls.user}/users`, { body: { username, password: PASSWORD } });
  assert.equal(signUp.status, 201, JSON.stringify(signUp.body));
  const id: number = signUp.body.data.user.id;
  if (balance > 0) {
    const deposit = await call("POST", `${urls.user}/users/${id}/balance/add`, {
      body: { amount: balance },
      headers: asAdmin(),
    });
    assert.equal(deposit.status, 200, JSON.stringify(deposit.body));
  }
  return { id, username, token: await login(username, PASSWORD) };
}

export async function login(username: string, password: string): Promise<string> {
  const answer = await call("POST", `${urls.user}/auth/login`, { body: { username, password } });
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  assert.equal(answer.body.data.token_type, "Bearer");
  return answer.body.data.access_token;
}

export async function balanceOf(user_id: number): Promise<number> {
  const answer = await call("GET", `${urls.user}/users/${user_id}`, { headers: asAdmin() });
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  return answer.body.data.user.balance;
}

/** POST /transactions/transfer as the holder of `token`, with an optional Idempotency-Key. */
export function transfer(body: unknown, key: string | undefined, token: string): Promise<Answer> {
  return call("POST", `${urls.transaction}/transactions/transfer`, {
    body,
    headers: key === undefined ? bearer(token) : { ...bearer(token), "idempotency-key": key },
  });
}

/** Poll the public read API (as the holder of `token`) until the transfer leaves PENDING. */
// biome-ignore lint/suspicious/noExplicitAny: free-form JSON
export async function settled(id: string, token: string, timeout_ms = 30_000): Promise<any> {
  const deadline = Date.now() + timeout_ms;
  for (;;) {
    const answer = await call("GET", `${urls.transaction}/transactions/${id}`, { headers: bearer(token) });
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    const transaction = answer.body.data.transaction;
    if (transaction.status !== "PENDING") return transaction;
    if (Date.now() > deadline) assert.fail(`transfer ${id} still PENDING after ${timeout_ms} ms`);
    await sleep(100);
  }
}

/**
 * Poll the query service (the records, as the operator) until the transfer's record says
 * `status`: a client sees a transfer final before its final record is written.
 */
// biome-ignore lint/suspicious/noExplicitAny: free-form JSON
export async function recordIn(id: string, status: string, timeout_ms = 30_000): Promise<any> {
  const deadline = Date.now() + timeout_ms;
  for (;;) {
    const answer = await call("GET", `${urls.query}/transactions/${id}`, { headers: asAdmin() });
    const record = answer.status === 200 ? answer.body.data.transaction : undefined;
    if (record?.status === status) return record;
    if (Date.now() > deadline)
      assert.fail(`record of ${id} not ${status} after ${timeout_ms} ms: ${answer.status}`);
    await sleep(100);
  }
}

/** The ledger's own consistency figures (I1, I2, I6): the operator, on the internal listener. */
// biome-ignore lint/suspicious/noExplicitAny: free-form JSON
export async function ledgerAudit(): Promise<any> {
  const answer = await call("GET", `${internalUrls.user}/internal/audit`, { headers: asAdmin() });
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  return answer.body.data;
}
