/**
 * Log-in, sign-up and revocation through Fastify (inject, no socket) against a real PostgreSQL
 * (a fresh schema) and a real Redis (its own key prefix): the per-address limit (the test stack
 * raises it, since every test client shares 127.0.0.1), the token version a log-in issues, and
 * a change refused, with nothing changed, when Redis cannot take the new version.
 */
import assert from "node:assert/strict";
import { createHash, randomUUID } from "node:crypto";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { createClient } from "redis";
import { Authenticator } from "#packages/http/auth.ts";
import { RateLimiter } from "#packages/http/rate-limit.ts";
import { createListeners, type Listeners } from "#packages/http/server.ts";
import { tokenVersionKey } from "#packages/http/token-versions.ts";
import { createLogger } from "#packages/log/index.ts";
import { createPool, migrate, type Pool } from "#packages/pg/index.ts";
import { PasswordHasher } from "../src/domain.ts";
import { registerRoutes } from "../src/http.ts";
import { assertSystemAccounts } from "../src/ledger/accounts.ts";
import { tokenVersionOf } from "../src/ledger/users.ts";
import { Revocations } from "../src/revocation.ts";

const DATABASE_URL = process.env.TEST_LEDGER_DATABASE_URL ?? "";
const REDIS_URL = process.env.TEST_REDIS_URL ?? "";
const SCHEMA = `user_service_auth_test_${process.pid}_${Date.now()}`;
const PREFIX = `${process.env.REDIS_KEY_PREFIX ?? ""}auth-test-${randomUUID()}:`;
const ADMIN_TOKEN = "test-admin-token-0123456789";
const PASSWORD = "correct horse battery";
const logger = createLogger("user-service-auth-test", "silent");
const sha256 = (text: string) => createHash("sha256").update(text).digest("hex");

let admin: Pool;
let pool: Pool;
const redis = createClient({ url: REDIS_URL || "redis://127.0.0.1:1/0", socket: { connectTimeout: 2_000 } });
// A real client whose server is not there: every command fails at once.
const absent = createClient({ url: "redis://127.0.0.1:1/0", disableOfflineQueue: true });
let live: Listeners;
let broken: Listeners;

/**
 * The live limiter's window is an hour and its Redis calls may take seconds: a count is never
 * reset by a window ending mid-test, nor skipped because a loaded host answered late (a limiter
 * lets a request through when Redis does not answer in time). The absent Redis fails fast.
 */
function build(client: typeof redis, timeout_ms: number): Listeners {
  const listeners = createListeners({ logger });
  const limiter = (max: number, per: string) =>
    new RateLimiter(client, { prefix: PREFIX, max, window_ms: 3_600_000, timeout_ms, logger, per });
  registerRoutes(listeners, {
    pool,
    auth: new Authenticator(
      { admin_sha256: sha256(ADMIN_TOKEN), token_secret: "test-token-secret-0123456789-0123456789" },
      { current: (user_id) => tokenVersionOf(pool, user_id) },
    ),
    hasher: new PasswordHasher({ log2_n: 14, concurrency_max: 2, queue_max: 8 }),
    revocations: new Revocations(client, {
      prefix: PREFIX,
      timeout_ms: 200,
      cache_ms: 0,
      reader_timeout_ms: 200,
      logger,
    }),
    limits: { address: limiter(3, "client address"), username: limiter(10, "username") },
  });
  return listeners;
}

let counter = 0;
function uniqueName(): string {
  counter += 1;
  return `auth${process.pid}_${counter}`;
}

function post(listeners: Listeners, url: string, body: unknown, address = "10.0.0.1", token?: string) {
  return listeners.public.inject({
    method: "POST",
    url,
    remoteAddress: address,
    headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
    ...(body === undefined ? {} : { payload: body as Record<string, unknown> }),
  });
}

const claims = (token: string) => JSON.parse(Buffer.from(token.split(".")[1] ?? "", "base64url").toString());

describe("log-in, sign-up and revocation (real PostgreSQL and Redis)", {
  skip:
    DATABASE_URL === "" || REDIS_URL === "" ? "TEST_LEDGER_DATABASE_URL or TEST_REDIS_URL is not set" : false,
}, () => {
  before(async () => {
    admin = createPool(DATABASE_URL, { max: 1, application_name: "user-service-auth-test" });
    await admin.query(`CREATE SCHEMA ${SCHEMA}`);
    const url = new URL(DATABASE_URL);
    url.searchParams.set("options", `-c search_path=${SCHEMA}`);
    pool = createPool(url.toString(), { max: 5, application_name: "user-service-auth-test" });
    await migrate(pool, join(import.meta.dirname, "..", "migrations"));
    await assertSystemAccounts(pool);
    await redis.connect();
    live = build(redis, 5_000);
    broken = build(absent, 500);
    await live.public.ready();
    await broken.public.ready();
  });

  after(async () => {
    await live?.public.close();
    await broken?.public.close();
    const keys = await redis.keys(`${PREFIX}*`);
    if (keys.length > 0) await redis.del(keys);
    await redis.quit();
    await pool?.end();
    await admin?.query(`DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE`);
    await admin?.end();
  });

  it("limits log-ins plus sign-ups per client address: 429 with Retry-After; other addresses unaffected", async () => {
    const names = [uniqueName(), uniqueName()];
    for (const username of names) {
      const signUp = await post(live, "/users", { username, password: PASSWORD }, "10.0.0.7");
      assert.equal(signUp.statusCode, 201, signUp.body);
    }
    const login = await post(live, "/auth/login", { username: names[0], password: PASSWORD }, "10.0.0.7");
    assert.equal(login.statusCode, 200, login.body);
    for (const [url, body] of [
      ["/auth/login", { username: names[0], password: PASSWORD }],
      ["/users", { username: uniqueName(), password: PASSWORD }],
    ] as const) {
      const limited = await post(live, url, body, "10.0.0.7");
      assert.equal(limited.statusCode, 429, limited.body);
      assert.equal(limited.json().code, "rate_limited");
      assert.ok(Number(limited.headers["retry-after"]) >= 1);
    }
    const elsewhere = await post(live, "/auth/login", { username: names[0], password: PASSWORD }, "10.0.0.8");
    assert.equal(elsewhere.statusCode, 200, elsewhere.body);
  });

  it("issues tokens at the higher of the database's and Redis's version, and a change goes above both", async () => {
    const username = uniqueName();
    const created = await post(live, "/users", { username, password: PASSWORD }, "10.0.1.1");
    const id: number = created.json().data.user.id;
    // A version left in Redis by a change whose commit failed.
    await redis.set(tokenVersionKey(PREFIX, id), "5");
    const first = await post(live, "/auth/login", { username, password: PASSWORD }, "10.0.1.1");
    const token: string = first.json().data.access_token;
    assert.equal(claims(token).ver, 5);
    const locked = await post(live, `/users/${id}/lock`, undefined, "10.0.1.1", ADMIN_TOKEN);
    assert.equal(locked.statusCode, 200, locked.body);
    assert.equal(await redis.get(tokenVersionKey(PREFIX, id)), "6");
    assert.equal(await tokenVersionOf(pool, id), 6);
    const read = await live.public.inject({
      method: "GET",
      url: `/users/${id}`,
      headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(read.statusCode, 401, read.body);
  });

  it("refuses a lock or a password change with 503, changing nothing, when Redis cannot take the new version", async () => {
    const username = uniqueName();
    const created = await post(live, "/users", { username, password: PASSWORD }, "10.0.2.1");
    const id: number = created.json().data.user.id;
    const token: string = (
      await post(live, "/auth/login", { username, password: PASSWORD }, "10.0.2.1")
    ).json().data.access_token;
    const lock = await post(broken, `/users/${id}/lock`, undefined, "10.0.2.1", ADMIN_TOKEN);
    assert.equal(lock.statusCode, 503, lock.body);
    assert.equal(lock.headers["retry-after"], "1");
    const change = await broken.public.inject({
      method: "PUT",
      url: `/users/${id}`,
      headers: { authorization: `Bearer ${token}` },
      payload: { password: "another passphrase", current_password: PASSWORD },
    });
    assert.equal(change.statusCode, 503, change.body);
    // Nothing changed: not locked, same version, the old password and token still work.
    assert.equal(await tokenVersionOf(pool, id), 0);
    const again = await post(live, "/auth/login", { username, password: PASSWORD }, "10.0.2.2");
    assert.equal(again.statusCode, 200, again.body);
    const read = await live.public.inject({
      method: "GET",
      url: `/users/${id}`,
      headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(read.statusCode, 200, read.body);
  });
});
