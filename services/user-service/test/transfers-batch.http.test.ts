/**
 * POST /internal/transfers/batch end to end through Fastify (inject, no socket) against a real
 * PostgreSQL (TEST_LEDGER_DATABASE_URL; skipped when unset), in a fresh schema of its own: the
 * request contract (the ledger credential only, on the internal listener only, one step per
 * transfer, 1..LEDGER_BATCH_MAX steps), the answer's shape and order, and the single-step routes on
 * the same functions.
 */
import assert from "node:assert/strict";
import { createHash, randomUUID } from "node:crypto";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { createClient } from "redis";
import { LEDGER_BATCH_MAX } from "#packages/contracts/ledger.ts";
import { Authenticator } from "#packages/http/auth.ts";
import { registerOpenApi } from "#packages/http/openapi.ts";
import { RateLimiter } from "#packages/http/rate-limit.ts";
import { createListeners, type HttpServer, type Listeners } from "#packages/http/server.ts";
import { createLogger } from "#packages/log/index.ts";
import { createPool, migrate, type Pool } from "#packages/pg/index.ts";
import { PasswordHasher } from "../src/domain.ts";
import { registerRoutes } from "../src/http.ts";
import { assertSystemAccounts } from "../src/ledger/accounts.ts";
import { audit } from "../src/ledger/audit.ts";
import { createUser } from "../src/ledger/users.ts";
import { Revocations } from "../src/revocation.ts";

const BASE_URL = process.env.TEST_LEDGER_DATABASE_URL ?? "";
const SCHEMA = `user_service_http_test_${process.pid}_${Date.now()}`;
const LEDGER_TOKEN = "test-ledger-token-0123456789";
const QUERY_TOKEN = "test-query-token-0123456789";
const ADMIN_TOKEN = "test-admin-token-0123456789";

let pool: Pool;
let admin: Pool;
let app: HttpServer;
let listeners: Listeners;
let nameCounter = 0;

async function newUser(balance: number): Promise<number> {
  nameCounter += 1;
  const row = await createUser(pool, {
    username: `http${nameCounter}`,
    password_hash: "scrypt$not-a-real-hash",
    opening_balance: balance,
  });
  return Number(row.id);
}

async function call(url: string, body: unknown, token: string | null = LEDGER_TOKEN) {
  const response = await app.inject({
    method: "POST",
    url,
    headers: token === null ? {} : { authorization: `Bearer ${token}` },
    payload: body as Record<string, unknown>,
  });
  return { status: response.statusCode, body: response.json() };
}

const batch = (operations: unknown[], token?: string | null) =>
  call("/internal/transfers/batch", { operations }, token);

describe("POST /internal/transfers/batch", {
  skip: BASE_URL === "" ? "TEST_LEDGER_DATABASE_URL is not set" : false,
}, () => {
  before(async () => {
    admin = createPool(BASE_URL, { max: 1, application_name: "user-service-http-test" });
    await admin.query(`CREATE SCHEMA ${SCHEMA}`);
    const url = new URL(BASE_URL);
    url.searchParams.set("options", `-c search_path=${SCHEMA}`);
    pool = createPool(url.toString(), { max: 5, application_name: "user-service-http-test" });
    await migrate(pool, join(import.meta.dirname, "..", "migrations"));
    await assertSystemAccounts(pool);
    listeners = createListeners({ logger: createLogger("user-service-test", "silent") });
    app = listeners.internal;
    await registerOpenApi(app, { service: "user-service", description: "test" });
    await registerOpenApi(listeners.public, { service: "user-service", description: "test" });
    const sha256 = (text: string) => createHash("sha256").update(text).digest("hex");
    // The routes under test use neither Redis nor password hashing: a client that never connects.
    const logger = createLogger("user-service-test", "silent");
    const redis = createClient({ url: process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:1/0" });
    const limiter = new RateLimiter(redis, { prefix: "", max: 0, window_ms: 1_000, timeout_ms: 100, logger });
    registerRoutes(listeners, {
      hasher: new PasswordHasher({ log2_n: 14, concurrency_max: 1, queue_max: 1 }),
      revocations: new Revocations(redis, {
        prefix: "",
        timeout_ms: 100,
        cache_ms: 0,
        reader_timeout_ms: 100,
        logger,
      }),
      limits: { address: limiter, username: limiter },
      pool,
      auth: new Authenticator({
        admin_sha256: sha256(ADMIN_TOKEN),
        ledger_sha256: sha256(LEDGER_TOKEN),
        token_secret: "test-token-secret-0123456789-0123456789",
      }),
    });
    await app.ready();
    await listeners.public.ready();
  });

  after(async () => {
    await app?.close();
    await listeners?.public.close();
    await pool?.end();
    await admin?.query(`DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE`);
    await admin?.end();
  });

  it("answers one result per operation, in input order, with the single-step routes' hold and codes", async () => {
    const a = await newUser(1000);
    const b = await newUser(0);
    const empty = await newUser(0);
    const t1 = randomUUID();
    const t2 = randomUUID();
    const single = await call(`/internal/transfers/${t2}/hold`, {
      source_user_id: a,
      dest_user_id: b,
      amount: 50,
    });
    assert.equal(single.status, 200, JSON.stringify(single.body));

    const missing = randomUUID();
    const answer = await batch([
      { op: "hold", transfer_id: t1, source_user_id: a, dest_user_id: b, amount: 100 },
      { op: "hold", transfer_id: randomUUID(), source_user_id: empty, dest_user_id: a, amount: 1 },
      { op: "post", transfer_id: t2 },
      { op: "void", transfer_id: missing },
    ]);
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    assert.equal(answer.body.success, true);
    const results = answer.body.data.results;
    assert.equal(results.length, 4);
    const [held, refused, posted, notFound] = results;
    assert.deepEqual(Object.keys(held).sort(), ["hold", "ok", "op", "transfer_id"]);
    assert.equal(held.ok, true);
    assert.equal(held.op, "hold");
    assert.equal(held.transfer_id, t1);
    assert.deepEqual(
      { ...held.hold, created_at: "", updated_at: "" },
      {
        transfer_id: t1,
        state: "held",
        source_user_id: a,
        dest_user_id: b,
        amount: 100,
        source_balance_before: 950,
        dest_balance_before: null,
        created_at: "",
        updated_at: "",
      },
    );
    assert.deepEqual(refused, {
      transfer_id: refused.transfer_id,
      op: "hold",
      ok: false,
      code: "insufficient_funds",
      message: `user ${empty} has less than 1 minor units`,
    });
    assert.equal(posted.ok, true);
    assert.equal(posted.hold.state, "posted");
    assert.equal(posted.hold.dest_balance_before, 0);
    assert.deepEqual(notFound, {
      transfer_id: missing,
      op: "void",
      ok: false,
      code: "hold_not_found",
      message: `no hold for transfer ${missing}`,
    });

    // The single-step routes read and answer the same holds.
    const read = await app.inject({
      method: "GET",
      url: `/internal/transfers/${t2}`,
      headers: { authorization: `Bearer ${LEDGER_TOKEN}` },
    });
    assert.deepEqual(read.json().data.hold, posted.hold);
    const voided = await call(`/internal/transfers/${t1}/void`, {});
    assert.equal(voided.status, 200);
    assert.equal(voided.body.data.hold.state, "voided");
    const again = await call(`/internal/transfers/${t1}/post`, {});
    assert.equal(again.status, 409);
    assert.equal(again.body.code, "hold_voided");
    assert.equal((await audit(pool)).consistent, true);
  });

  it("refuses a transfer twice in one batch, whatever the case of its id, and applies nothing", async () => {
    const a = await newUser(10);
    const b = await newUser(0);
    const t = randomUUID();
    const answer = await batch([
      { op: "hold", transfer_id: t, source_user_id: a, dest_user_id: b, amount: 1 },
      { op: "post", transfer_id: randomUUID() },
      { op: "post", transfer_id: t.toUpperCase() },
    ]);
    assert.equal(answer.status, 422);
    assert.equal(answer.body.code, "transfer_repeated_in_batch");
    assert.match(answer.body.message, /operations\.2\.transfer_id: .*already appears at operations\.0/);
    const { rowCount } = await pool.query("SELECT 1 FROM holds WHERE transfer_id = $1", [t]);
    assert.equal(rowCount, 0);
  });

  it("validates the body: 1..LEDGER_BATCH_MAX known operations with exactly their fields", async () => {
    const ok = { op: "post", transfer_id: randomUUID() };
    const cases: Array<[string, unknown]> = [
      ["empty", []],
      [
        "too many",
        Array.from({ length: LEDGER_BATCH_MAX + 1 }, () => ({ ...ok, transfer_id: randomUUID() })),
      ],
      ["unknown op", [{ op: "refund", transfer_id: randomUUID() }]],
      [
        "hold without amount",
        [{ op: "hold", transfer_id: randomUUID(), source_user_id: 1, dest_user_id: 2 }],
      ],
      ["post with an amount", [{ ...ok, amount: 1 }]],
      ["not a uuid", [{ op: "void", transfer_id: "t-1" }]],
      [
        "negative amount",
        [{ op: "hold", transfer_id: randomUUID(), source_user_id: 1, dest_user_id: 2, amount: -1 }],
      ],
    ];
    for (const [what, operations] of cases) {
      const answer = await call("/internal/transfers/batch", { operations });
      assert.equal(answer.status, 400, `${what}: ${JSON.stringify(answer.body)}`);
    }
    assert.equal((await call("/internal/transfers/batch", { operations: [ok], extra: 1 })).status, 400);
    const full = Array.from({ length: LEDGER_BATCH_MAX }, () => ({ ...ok, transfer_id: randomUUID() }));
    const answer = await batch(full);
    assert.equal(answer.status, 200);
    assert.equal(answer.body.data.results.length, LEDGER_BATCH_MAX);
  });

  it("takes the ledger credential only", async () => {
    const operations = [{ op: "post", transfer_id: randomUUID() }];
    assert.equal((await batch(operations, null)).status, 401);
    assert.equal((await batch(operations, ADMIN_TOKEN)).status, 403);
    // The read side's credential is not one user-service knows at all.
    assert.equal((await batch(operations, QUERY_TOKEN)).status, 401);
    assert.equal((await batch(operations, LEDGER_TOKEN)).status, 200);
    // The operator reads holds and the audit, but moves nothing.
    const id = randomUUID();
    for (const step of ["hold", "post", "void"]) {
      assert.equal((await call(`/internal/transfers/${id}/${step}`, {}, ADMIN_TOKEN)).status, 403, step);
    }
    const read = await app.inject({
      method: "GET",
      url: `/internal/audit`,
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    assert.equal(read.statusCode, 200);
  });

  it("is served on the internal listener only: the public one answers 404 to every credential", async () => {
    const operations = [{ op: "post", transfer_id: randomUUID() }];
    for (const token of [LEDGER_TOKEN, ADMIN_TOKEN]) {
      for (const [method, url] of [
        ["POST", "/internal/transfers/batch"],
        ["POST", `/internal/transfers/${randomUUID()}/hold`],
        ["GET", `/internal/transfers/${randomUUID()}`],
        ["GET", "/internal/audit"],
      ] as const) {
        const response = await listeners.public.inject({
          method,
          url,
          headers: { authorization: `Bearer ${token}` },
          ...(method === "POST" ? { payload: { operations } } : {}),
        });
        assert.equal(response.statusCode, 404, `${method} ${url}`);
      }
    }
    const doc = await listeners.public.inject({ method: "GET", url: "/openapi.json" });
    assert.deepEqual(
      Object.keys(doc.json().paths).filter((path) => path.startsWith("/internal")),
      [],
    );
  });

  it("answers GET with 405 and the allowed method, not as the hold of a transfer named batch", async () => {
    const response = await app.inject({
      method: "GET",
      url: "/internal/transfers/batch",
      headers: { authorization: `Bearer ${LEDGER_TOKEN}` },
    });
    assert.equal(response.statusCode, 405);
    assert.equal(response.headers.allow, "POST");
  });

  it("is described in the OpenAPI document", async () => {
    const response = await app.inject({ method: "GET", url: "/openapi.json" });
    assert.equal(response.statusCode, 200);
    const route = response.json().paths["/internal/transfers/batch"]?.post;
    assert.ok(route, "no POST /internal/transfers/batch in the document");
    assert.match(route.summary, /one transaction/);
    assert.ok(route.responses["200"] && route.responses["400"] && route.responses["503"]);
  });
});
