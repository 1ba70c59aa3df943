/**
 * POST /transactions/transfer through Fastify (inject, no socket) with a saga store that fails
 * around its commits: a request whose transfer exists is never told to retry. With a keyless
 * request, a retry would make a second transfer and pay twice.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Authenticator } from "#packages/http/auth.ts";
import { registerOpenApi } from "#packages/http/openapi.ts";
import { RateLimiter } from "#packages/http/rate-limit.ts";
import { createHttpServer, type HttpServer } from "#packages/http/server.ts";
import { createLogger } from "#packages/log/index.ts";
import { registerRoutes } from "../src/http.ts";
import type { SagaRunner } from "../src/saga/runner.ts";
import {
  type CreateResult,
  type NewTransfer,
  type SagaStore,
  type StoredTransfer,
  TransferOutcomeUnknownError,
} from "../src/saga/store.ts";

const logger = createLogger("transfer-post-test", "silent");
const auth = new Authenticator({ token_secret: "test-token-secret-0123456789-0123456789" });

/** What the store stub does with the next request. */
let createOrGet: (input: NewTransfer) => Promise<CreateResult>;
let saveResponse: () => Promise<void>;
let app: HttpServer;

function created(input: NewTransfer): CreateResult {
  const now = new Date().toISOString();
  const transfer: StoredTransfer = {
    id: input.id,
    state: "created",
    source_user_id: input.source_user_id,
    dest_user_id: input.dest_user_id,
    amount: input.amount,
    source_init_bal: null,
    dest_init_bal: null,
    failure_reason: null,
    created_at: now,
    updated_at: now,
    idempotency_key: input.idempotency_key,
    request_fingerprint: input.request_fingerprint,
    response_status: null,
    response_body: null,
    attempts: 0,
  };
  return { created: true, transfer, age_ms: 0 };
}

async function post(token: string) {
  const response = await app.inject({
    method: "POST",
    url: "/transactions/transfer",
    headers: { authorization: `Bearer ${token}` },
    payload: { source_user_id: 1, dest_user_id: 2, amount: 100 },
  });
  return { status: response.statusCode, body: response.json() };
}

describe("POST /transactions/transfer when PostgreSQL fails around a commit", () => {
  before(async () => {
    app = createHttpServer({ logger });
    await registerOpenApi(app, { service: "transaction-service", description: "test" });
    const store = {
      createOrGet: (input: NewTransfer) => createOrGet(input),
      saveResponse: () => saveResponse(),
    } as unknown as SagaStore;
    // The ledger does not answer: the transfer stays `created`, left to the sweep.
    const runner = {
      advance: async () => {
        throw new Error("ledger timed out");
      },
      onTransition: () => {},
    } as unknown as SagaRunner;
    const limiter = new RateLimiter(
      { eval: async () => 1, del: async () => 1 },
      { prefix: "", max: 0, window_ms: 1_000, timeout_ms: 100, logger },
    );
    registerRoutes(app, {
      store,
      runner,
      cache: {} as never,
      query: {} as never,
      logger,
      step_timeout_ms: 5_000,
      auth,
      limiter,
      waiters: {} as never,
    });
    await app.ready();
  });

  after(async () => {
    await app?.close();
  });

  it("a keyless request whose outcome could not be learnt is told its transfer may exist, with its id", async () => {
    const { access_token } = await auth.issueUserToken(1);
    let id = "";
    createOrGet = async (input) => {
      id = input.id;
      throw new TransferOutcomeUnknownError(input.id, new Error("Connection terminated unexpectedly"));
    };
    const answer = await post(access_token);
    assert.equal(answer.status, 503, JSON.stringify(answer.body));
    assert.equal(answer.body.code, "transfer_outcome_unknown");
    assert.equal(answer.body.details.transaction_id, id);
    assert.match(answer.body.message, /may have been created/);
  });

  it("a created transfer is answered 201 PENDING even when keeping its answer fails", async () => {
    const { access_token } = await auth.issueUserToken(1);
    createOrGet = async (input) => created(input);
    saveResponse = async () => {
      throw new Error("Connection terminated unexpectedly");
    };
    const answer = await post(access_token);
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    assert.equal(answer.body.data.transaction.status, "PENDING");
  });
});
