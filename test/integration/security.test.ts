/**
 * The API contract and its security, through HTTP on the real services: OpenAPI documents,
 * authentication (login, tokens), authorization (own wallet only, operator and service
 * credentials), validation (400/413/415/422, SQL-looking input stored literally), idempotency
 * key reuse, and the per-user rate limit.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes, scryptSync } from "node:crypto";
import { describe, it } from "node:test";
import { SignJWT } from "jose";
import { createPool } from "#packages/pg/index.ts";
import {
  type Answer,
  asAdmin,
  asLedger,
  asQuery,
  bearer,
  call,
  createUser,
  internalUrls,
  login,
  PASSWORD,
  recordIn,
  settled,
  transfer,
  uniqueName,
  urls,
} from "./api.ts";
import { scrapeSample } from "./scrape.ts";

const services = {
  "user-service": urls.user,
  "transaction-command-service": urls.command,
  "transaction-query-service": urls.query,
  "transaction-service": urls.transaction,
};

/** Every body a test saw, to check afterwards that no password or hash ever left user-service. */
const seen: string[] = [];
function remember(answer: Answer): Answer {
  seen.push(JSON.stringify(answer.body));
  return answer;
}

function assertError(answer: Answer, status: number, code?: string): void {
  assert.equal(answer.status, status, JSON.stringify(answer.body));
  assert.equal(answer.body.success, false);
  assert.equal(typeof answer.body.message, "string");
  assert.ok(answer.body.message.length > 0);
  assert.equal(typeof answer.body.code, "string");
  if (code !== undefined) assert.equal(answer.body.code, code, JSON.stringify(answer.body));
}

async function raw(
  method: string,
  url: string,
  body: string | Uint8Array,
  headers: Record<string, string>,
): Promise<Answer> {
  const response = await fetch(url, { method, headers, body, signal: AbortSignal.timeout(15_000) });
  const text = await response.text();
  return { status: response.status, headers: response.headers, body: text ? JSON.parse(text) : null };
}

describe("API contract", () => {
  for (const [name, base] of Object.entries(services)) {
    it(`${name} serves its OpenAPI document and a browsable page with local assets`, async () => {
      const doc = await call("GET", `${base}/openapi.json`);
      assert.equal(doc.status, 200);
      assert.match(doc.body.openapi, /^3\./);
      assert.equal(doc.body.info.title, name);
      assert.ok(doc.body.paths["/health"], "health is documented");
      assert.ok(doc.body.paths["/health/ready"], "readiness is documented");
      assert.ok(doc.body.components.securitySchemes.adminToken);
      for (const [path, operations] of Object.entries(doc.body.paths)) {
        for (const [method, operation] of Object.entries(operations as Record<string, unknown>)) {
          const responses = (operation as { responses: Record<string, unknown> }).responses;
          assert.ok(
            Object.keys(responses).some((s) => s.startsWith("2")),
            `${method} ${path}: a success`,
          );
          // The health routes take no input and no credential: nothing to refuse.
          if (path !== "/health" && path !== "/health/ready")
            assert.ok(responses["400"] || responses["401"], `${method} ${path}: errors`);
        }
      }
      const page = await fetch(`${base}/docs/`);
      assert.equal(page.status, 200);
      const html = await page.text();
      assert.match(html, /swagger-ui/);
      assert.doesNotMatch(html, /(src|href)="https?:/, "no asset from another host");
      const bundle = await fetch(`${base}/docs/static/swagger-ui-bundle.js`);
      assert.equal(bundle.status, 200);
      await bundle.arrayBuffer();
    });
  }

  it("documents each route's credential", async () => {
    const doc = (await call("GET", `${urls.transaction}/openapi.json`)).body;
    assert.deepEqual(doc.paths["/transactions/transfer"].post.security, [{ userToken: [] }]);
    const user = (await call("GET", `${urls.user}/openapi.json`)).body;
    assert.deepEqual(user.paths["/users"].get.security, [{ adminToken: [] }]);
    assert.ok(user.paths["/auth/login"].post.responses["401"]);
  });
});

describe("authentication", () => {
  it("logs in with a username and password and returns a short-lived bearer token", async () => {
    const username = uniqueName("login");
    remember(await call("POST", `${urls.user}/users`, { body: { username, password: PASSWORD } }));
    const answer = remember(
      await call("POST", `${urls.user}/auth/login`, {
        body: { username: username.toUpperCase(), password: PASSWORD },
      }),
    );
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    assert.equal(answer.body.data.token_type, "Bearer");
    assert.ok(answer.body.data.expires_in > 0 && answer.body.data.expires_in <= 86_400);
    assert.match(answer.body.data.access_token, /^[\w-]+\.[\w-]+\.[\w-]+$/);
    const me = await call("GET", `${urls.user}/users/${answer.body.data.user_id}`, {
      headers: bearer(answer.body.data.access_token),
    });
    assert.equal(me.status, 200);
    assert.equal(me.body.data.user.username, username);
  });

  it("answers a wrong password and an unknown user alike: 401, one generic message", async () => {
    const a = await createUser();
    const wrong = remember(
      await call("POST", `${urls.user}/auth/login`, {
        body: { username: a.username, password: "not the password" },
      }),
    );
    const unknown = remember(
      await call("POST", `${urls.user}/auth/login`, {
        body: { username: uniqueName("nobody"), password: PASSWORD },
      }),
    );
    assertError(wrong, 401);
    assertError(unknown, 401);
    assert.deepEqual(wrong.body, unknown.body);
    const missing = await call("POST", `${urls.user}/auth/login`, { body: { username: a.username } });
    assertError(missing, 400);
  });

  it("refuses requests without a token, or with a malformed, forged or expired one: 401", async () => {
    const a = await createUser(100);
    const b = await createUser();
    const routes: Array<[string, string, unknown?]> = [
      [
        "POST",
        `${urls.transaction}/transactions/transfer`,
        { source_user_id: a.id, dest_user_id: b.id, amount: 1 },
      ],
      ["GET", `${urls.transaction}/transactions/0190b5a8-0000-7000-8000-000000000000`],
      ["GET", `${urls.transaction}/transactions/user/${a.id}`],
      ["GET", `${urls.user}/users/${a.id}`],
      ["GET", `${urls.user}/users`],
      ["PUT", `${urls.user}/users/${a.id}`, { username: uniqueName("x") }],
      ["DELETE", `${urls.user}/users/${b.id}`],
      ["POST", `${urls.user}/users/${a.id}/balance/add`, { amount: 5 }],
      ["GET", `${internalUrls.user}/internal/audit`],
      ["POST", `${internalUrls.user}/internal/transfers/0190b5a8-0000-7000-8000-000000000000/void`, {}],
      ["GET", `${urls.query}/transactions/user/${a.id}`],
      ["GET", `${internalUrls.command}/ops/faults`],
    ];
    const [header, payload, signature] = a.token.split(".") as [string, string, string];
    const claims = JSON.parse(Buffer.from(payload, "base64url").toString());
    const otherSub = Buffer.from(JSON.stringify({ ...claims, sub: String(b.id) })).toString("base64url");
    const none = Buffer.from(JSON.stringify({ alg: "none", typ: "at+jwt" })).toString("base64url");
    const wrongKey = await new SignJWT({})
      .setProtectedHeader({ alg: "HS256", typ: "at+jwt" })
      .setIssuer(claims.iss)
      .setAudience(claims.aud)
      .setSubject(String(a.id))
      .setIssuedAt()
      .setExpirationTime("5m")
      .sign(new TextEncoder().encode("not-the-secret-not-the-secret-not-the-secret"));
    const credentials: Array<Record<string, string>> = [
      {},
      { authorization: "" },
      { authorization: `Basic ${Buffer.from("admin:admin").toString("base64")}` },
      { authorization: "Bearer" },
      bearer("garbage"),
      bearer(`${header}.${otherSub}.${signature}`), // tampered subject
      bearer(`${none}.${payload}.`), // alg none
      bearer(wrongKey),
    ];
    const secret = process.env.AUTH_TOKEN_SECRET;
    if (secret) {
      const expired = await new SignJWT({})
        .setProtectedHeader({ alg: "HS256", typ: "at+jwt" })
        .setIssuer(claims.iss)
        .setAudience(claims.aud)
        .setSubject(String(a.id))
        .setIssuedAt(Math.floor(Date.now() / 1000) - 3_600)
        .setExpirationTime(Math.floor(Date.now() / 1000) - 60)
        .sign(new TextEncoder().encode(secret));
      credentials.push(bearer(expired));
    }
    for (const [method, url, body] of routes) {
      for (const headers of credentials) {
        const answer = await call(method, url, body === undefined ? { headers } : { body, headers });
        assertError(answer, 401, "unauthorized");
        assert.match(answer.headers.get("www-authenticate") ?? "", /^Bearer/);
      }
    }
    assert.equal(
      (await call("GET", `${urls.user}/users/${a.id}`, { headers: asAdmin() })).body.data.user.balance,
      100,
    );
  });
});

describe("authorization", () => {
  it("lets only the owner spend from a wallet: 403 for another user's wallet and for the operator", async () => {
    const a = await createUser(1_000);
    const b = await createUser(1_000);
    const fromB = { source_user_id: b.id, dest_user_id: a.id, amount: 10 };
    assertError(await transfer(fromB, undefined, a.token), 403, "forbidden");
    assertError(await transfer(fromB, undefined, process.env.ADMIN_TOKEN ?? ""), 403, "forbidden");
    // transaction-service presents the ledger and query credentials but accepts neither.
    assertError(await transfer(fromB, undefined, process.env.LEDGER_TOKEN ?? ""), 401, "unauthorized");
    assertError(await transfer(fromB, undefined, process.env.QUERY_TOKEN ?? ""), 401, "unauthorized");
    const own = await transfer(fromB, uniqueName("key"), b.token);
    assert.equal(own.status, 201, JSON.stringify(own.body));
    assert.equal((await settled(own.body.data.transaction.id, b.token)).status, "COMPLETED");
    const balances = await call("GET", `${urls.user}/users/${b.id}`, { headers: asAdmin() });
    assert.equal(balances.body.data.user.balance, 990);
  });

  it("lets a user read only their own record and transfers; the operator reads all", async () => {
    const a = await createUser(1_000);
    const b = await createUser();
    const c = await createUser();
    const sent = await transfer({ source_user_id: a.id, dest_user_id: b.id, amount: 7 }, undefined, a.token);
    const id = sent.body.data.transaction.id;
    await recordIn(id, (await settled(id, a.token)).status);

    assertError(
      await call("GET", `${urls.user}/users/${a.id}`, { headers: bearer(c.token) }),
      403,
      "forbidden",
    );
    assertError(
      await call("PUT", `${urls.user}/users/${a.id}`, {
        body: { password: "takeover-attempt" },
        headers: bearer(c.token),
      }),
      403,
    );
    assertError(await call("DELETE", `${urls.user}/users/${b.id}`, { headers: bearer(c.token) }), 403);
    assertError(await call("GET", `${urls.user}/users`, { headers: bearer(a.token) }), 403);
    assertError(
      await call("GET", `${urls.transaction}/transactions/${id}`, { headers: bearer(c.token) }),
      403,
    );
    assertError(
      await call("GET", `${urls.transaction}/transactions/user/${a.id}`, { headers: bearer(c.token) }),
      403,
    );
    // An id that does not exist is as forbidden as another user's: nothing to learn by probing.
    assertError(await call("GET", `${urls.user}/users/9000000000000`, { headers: bearer(c.token) }), 403);

    for (const token of [a.token, b.token, process.env.ADMIN_TOKEN ?? ""]) {
      const read = await call("GET", `${urls.transaction}/transactions/${id}`, { headers: bearer(token) });
      assert.equal(read.status, 200, JSON.stringify(read.body));
    }
    const history = await call("GET", `${urls.transaction}/transactions/user/${b.id}`, {
      headers: bearer(b.token),
    });
    assert.deepEqual(
      history.body.data.transactions.map((t: { id: string }) => t.id),
      [id],
    );
    assert.equal((await call("GET", `${urls.user}/users/${a.id}`, { headers: bearer(a.token) })).status, 200);
    assert.equal((await call("GET", `${urls.user}/users/${a.id}`, { headers: asAdmin() })).status, 200);
    const list = remember(await call("GET", `${urls.user}/users?limit=5`, { headers: asAdmin() }));
    assert.equal(list.status, 200);
    assert.ok(list.body.data.users.length > 0);
  });

  it("gives public sign-up an empty wallet; opening balances and deposits take the operator credential", async () => {
    const body = { username: uniqueName("rich"), password: PASSWORD, balance: 1_000_000 };
    assertError(await call("POST", `${urls.user}/users`, { body }), 403, "forbidden");
    const a = await createUser();
    assertError(await call("POST", `${urls.user}/users`, { body, headers: bearer(a.token) }), 403);
    const deposit = { body: { amount: 1_000_000 } };
    assertError(
      await call("POST", `${urls.user}/users/${a.id}/balance/add`, { ...deposit, headers: bearer(a.token) }),
      403,
    );
    assert.equal(
      (await call("GET", `${urls.user}/users/${a.id}`, { headers: bearer(a.token) })).body.data.user.balance,
      0,
    );
    const opened = remember(await call("POST", `${urls.user}/users`, { body, headers: asAdmin() }));
    assert.equal(opened.status, 201, JSON.stringify(opened.body));
    assert.equal(opened.body.data.user.balance, 1_000_000);
    const topUp = remember(
      await call("POST", `${urls.user}/users/${a.id}/balance/add`, { ...deposit, headers: asAdmin() }),
    );
    assert.equal(topUp.status, 200, JSON.stringify(topUp.body));
    assert.equal(topUp.body.data.user.balance, 1_000_000);
  });

  it("lets only the saga's credential call the ledger's steps, and only on the internal listener", async () => {
    const a = await createUser(1_000);
    const b = await createUser();
    const id = "0190b5a8-0000-7000-8000-00000000abcd";
    const body = { source_user_id: a.id, dest_user_id: b.id, amount: 1_000 };
    const steps: Array<[string, unknown]> = [
      [`/internal/transfers/${id}/hold`, body],
      [`/internal/transfers/${id}/post`, {}],
      [`/internal/transfers/${id}/void`, {}],
      ["/internal/transfers/batch", { operations: [{ op: "hold", transfer_id: id, ...body }] }],
    ];
    for (const [path, payload] of steps) {
      // Known to user-service but not allowed to move money: 403.
      assertError(
        await call("POST", `${internalUrls.user}${path}`, { body: payload, headers: bearer(a.token) }),
        403,
      );
      assertError(
        await call("POST", `${internalUrls.user}${path}`, { body: payload, headers: asAdmin() }),
        403,
      );
      // The read side's credential means nothing to the ledger: 401.
      assertError(
        await call("POST", `${internalUrls.user}${path}`, { body: payload, headers: asQuery() }),
        401,
      );
      // On the public listener the route does not exist, whoever asks.
      for (const headers of [asLedger(), asAdmin(), bearer(a.token), {}]) {
        assertError(
          await call("POST", `${urls.user}${path}`, { body: payload, headers }),
          404,
          "route_not_found",
        );
      }
    }
    for (const path of ["/internal/audit", `/internal/transfers/${id}`]) {
      assertError(await call("GET", `${urls.user}${path}`, { headers: asAdmin() }), 404);
      assertError(await call("GET", `${internalUrls.user}${path}`, { headers: bearer(a.token) }), 403);
    }
    assert.equal(
      (await call("GET", `${internalUrls.user}/internal/audit`, { headers: asAdmin() })).status,
      200,
    );
    // Every /ops route is internal too.
    assertError(await call("GET", `${urls.command}/ops/faults`, { headers: asAdmin() }), 404);
    assertError(
      await call("PUT", `${urls.transaction}/ops/crash`, {
        body: { point: "after_transfer" },
        headers: asAdmin(),
      }),
      404,
    );
    assert.equal(
      (await call("GET", `${internalUrls.command}/ops/faults`, { headers: asAdmin() })).status,
      200,
    );
    // The read side takes the query credential and the operator's; a user's token is no credential to it.
    assertError(
      await call("GET", `${urls.query}/transactions/user/${a.id}`, { headers: bearer(a.token) }),
      401,
    );
    assertError(await call("GET", `${urls.query}/transactions/user/${a.id}`, { headers: asLedger() }), 401);
    const asReader = await call("GET", `${urls.query}/transactions/user/${a.id}`, { headers: asQuery() });
    assert.equal(asReader.status, 200, JSON.stringify(asReader.body));
    // The command service knows only the operator.
    assertError(await call("GET", `${internalUrls.command}/ops/faults`, { headers: bearer(a.token) }), 401);
    assertError(await call("GET", `${internalUrls.command}/ops/faults`, { headers: asLedger() }), 401);
    assert.equal(
      (await call("GET", `${urls.user}/users/${a.id}`, { headers: asAdmin() })).body.data.user.balance,
      1_000,
    );
  });

  it("tells anonymous callers only up or down on /health; details for the operator and on the internal listener", async () => {
    for (const name of ["user", "command", "query", "transaction"] as const) {
      const anonymous = await call("GET", `${urls[name]}/health`);
      assert.equal(anonymous.status, 200, JSON.stringify(anonymous.body));
      assert.deepEqual(anonymous.body, { status: "up" });
      const operator = await call("GET", `${urls[name]}/health`, { headers: asAdmin() });
      assert.equal(operator.body.data.healthy, true, JSON.stringify(operator.body));
      const internal = await call("GET", `${internalUrls[name]}/health`);
      assert.equal(internal.body.data.healthy, true, JSON.stringify(internal.body));
    }
  });
});

describe("account takeover", () => {
  it("never lets the operator set a password, and a user only with the current one", async () => {
    const a = await createUser(100);
    const newPassword = "a brand new passphrase";
    assertError(
      await call("PUT", `${urls.user}/users/${a.id}`, {
        body: { password: newPassword },
        headers: asAdmin(),
      }),
      403,
      "forbidden",
    );
    assertError(
      await call("PUT", `${urls.user}/users/${a.id}`, {
        body: { password: newPassword, current_password: PASSWORD },
        headers: asAdmin(),
      }),
      403,
      "forbidden",
    );
    assertError(
      await call("PUT", `${urls.user}/users/${a.id}`, {
        body: { password: newPassword },
        headers: bearer(a.token),
      }),
      403,
      "current_password_required",
    );
    assertError(
      await call("PUT", `${urls.user}/users/${a.id}`, {
        body: { password: newPassword, current_password: "not the password" },
        headers: bearer(a.token),
      }),
      403,
      "current_password_mismatch",
    );
    // Nothing changed: the old password still logs in.
    await login(a.username, PASSWORD);
    // The operator may still rename.
    const renamed = await call("PUT", `${urls.user}/users/${a.id}`, {
      body: { username: uniqueName("renamed") },
      headers: asAdmin(),
    });
    assert.equal(renamed.status, 200, JSON.stringify(renamed.body));
  });

  it("revokes a user's tokens at once on both services when the password changes", async () => {
    const a = await createUser(100);
    const b = await createUser();
    const old = a.token;
    // Warm both services' caches with the old token.
    assert.equal((await call("GET", `${urls.user}/users/${a.id}`, { headers: bearer(old) })).status, 200);
    const history = `${urls.transaction}/transactions/user/${a.id}`;
    assert.equal((await call("GET", history, { headers: bearer(old) })).status, 200);
    const newPassword = "a brand new passphrase";
    const changed = await call("PUT", `${urls.user}/users/${a.id}`, {
      body: { password: newPassword, current_password: PASSWORD },
      headers: bearer(old),
    });
    assert.equal(changed.status, 200, JSON.stringify(changed.body));
    // The very next requests with the old token are refused, on both services.
    assertError(
      await call("GET", `${urls.user}/users/${a.id}`, { headers: bearer(old) }),
      401,
      "unauthorized",
    );
    assertError(await call("GET", history, { headers: bearer(old) }), 401, "unauthorized");
    assertError(await transfer({ source_user_id: a.id, dest_user_id: b.id, amount: 1 }, undefined, old), 401);
    assertError(
      await call("POST", `${urls.user}/auth/login`, { body: { username: a.username, password: PASSWORD } }),
      401,
    );
    const fresh = await login(a.username, newPassword);
    assert.equal((await call("GET", history, { headers: bearer(fresh) })).status, 200);
    const sent = await transfer({ source_user_id: a.id, dest_user_id: b.id, amount: 1 }, undefined, fresh);
    assert.equal(sent.status, 201, JSON.stringify(sent.body));
    await settled(sent.body.data.transaction.id, fresh);
  });

  it("lets the operator lock an account: its tokens die at once, log-in is refused until unlocked", async () => {
    const a = await createUser(100);
    const history = `${urls.transaction}/transactions/user/${a.id}`;
    assert.equal((await call("GET", history, { headers: bearer(a.token) })).status, 200);
    assertError(await call("POST", `${urls.user}/users/${a.id}/lock`, { headers: bearer(a.token) }), 403);
    const locked = await call("POST", `${urls.user}/users/${a.id}/lock`, { headers: asAdmin() });
    assert.equal(locked.status, 200, JSON.stringify(locked.body));
    assert.equal(locked.body.data.locked, true);
    assertError(await call("GET", history, { headers: bearer(a.token) }), 401, "unauthorized");
    assertError(
      await call("GET", `${urls.user}/users/${a.id}`, { headers: bearer(a.token) }),
      401,
      "unauthorized",
    );
    const right = { username: a.username, password: PASSWORD };
    assertError(await call("POST", `${urls.user}/auth/login`, { body: right }), 403, "account_locked");
    // Without the password, a locked account looks like any other.
    assertError(
      await call("POST", `${urls.user}/auth/login`, { body: { ...right, password: "wrong password" } }),
      401,
      "invalid_credentials",
    );
    const unlocked = await call("POST", `${urls.user}/users/${a.id}/unlock`, { headers: asAdmin() });
    assert.equal(unlocked.status, 200, JSON.stringify(unlocked.body));
    const token = await login(a.username, PASSWORD);
    assert.equal((await call("GET", history, { headers: bearer(token) })).status, 200);
  });

  it("rehashes a password stored at a lower cost on the next successful log-in", async (t) => {
    const url = process.env.TEST_LEDGER_DATABASE_URL;
    if (url === undefined) {
      t.skip("TEST_LEDGER_DATABASE_URL is not set");
      return;
    }
    const a = await createUser();
    const salt = randomBytes(16);
    const key = scryptSync(PASSWORD, salt, 32, { N: 2 ** 14, r: 4, p: 1 });
    const weak = `scrypt$16384$4$1$${salt.toString("base64")}$${key.toString("base64")}`;
    const pg = createPool(url, { max: 1, application_name: "security-test" });
    try {
      await pg.query("UPDATE users SET password_hash = $2 WHERE id = $1", [a.id, weak]);
      await login(a.username, PASSWORD);
      const { rows } = await pg.query("SELECT password_hash FROM users WHERE id = $1", [a.id]);
      assert.notEqual(rows[0].password_hash, weak);
      assert.match(rows[0].password_hash, /^scrypt\$\d+\$8\$1\$/);
      await login(a.username, PASSWORD);
    } finally {
      await pg.end();
    }
  });
});

describe("credentials per service", () => {
  it("hands each service only the secrets it presents, and digests of those it only checks", async () => {
    const { serviceEnv, serviceNames } = await import("../../scripts/stack/env.ts");
    const secrets = {
      ADMIN_TOKEN: "admin-token-for-this-test-0123",
      LEDGER_TOKEN: "ledger-token-for-this-test-0123",
      QUERY_TOKEN: "query-token-for-this-test-0123",
      AUTH_TOKEN_SECRET: "auth-token-secret-for-this-test-0123456789",
    };
    const sha = (text: string) => createHash("sha256").update(text).digest("hex");
    const held = Object.fromEntries(
      serviceNames.map((name) => [name, serviceEnv(name, { ...secrets, HOST: "127.0.0.1" })]),
    );
    // Only transaction-service holds anything the ledger's steps accept.
    for (const [name, env] of Object.entries(held)) {
      const values = Object.values(env);
      assert.equal(values.includes(secrets.LEDGER_TOKEN), name === "transaction-service", name);
      assert.equal(values.includes(secrets.ADMIN_TOKEN), false, `${name} holds the operator credential`);
      assert.equal(env.ADMIN_TOKEN_SHA256, sha(secrets.ADMIN_TOKEN), name);
      assert.equal(env.HOST, "127.0.0.1");
    }
    assert.equal(held["user-service"]?.LEDGER_TOKEN_SHA256, sha(secrets.LEDGER_TOKEN));
    assert.equal(held["user-service"]?.AUTH_TOKEN_SECRET, secrets.AUTH_TOKEN_SECRET);
    assert.equal(held["transaction-query-service"]?.QUERY_TOKEN_SHA256, sha(secrets.QUERY_TOKEN));
    // Absent or blanked (blank, so that nothing inherited from the supervisor's environment shows through).
    assert.equal(held["transaction-query-service"]?.QUERY_TOKEN ?? "", "");
    assert.equal(held["transaction-command-service"]?.AUTH_TOKEN_SECRET ?? "", "");
    assert.equal(held["transaction-command-service"]?.QUERY_TOKEN ?? "", "");
    assert.equal(held["transaction-service"]?.QUERY_TOKEN, secrets.QUERY_TOKEN);
    assert.equal(held["transaction-service"]?.AUTH_TOKEN_SECRET, secrets.AUTH_TOKEN_SECRET);
  });
});

describe("validation", () => {
  it("never returns a password or its hash", async () => {
    const a = await createUser(10);
    const username = uniqueName("secretive");
    const password = "p4ssw0rd-that-must-not-leak";
    const created = remember(await call("POST", `${urls.user}/users`, { body: { username, password } }));
    const id = created.body.data.user.id;
    const token = await login(username, password);
    remember(await call("GET", `${urls.user}/users/${id}`, { headers: bearer(token) }));
    remember(
      await call("PUT", `${urls.user}/users/${id}`, {
        body: { password: `${password}-2` },
        headers: bearer(token),
      }),
    );
    remember(await call("GET", `${urls.user}/users?limit=100`, { headers: asAdmin() }));
    remember(
      await call("POST", `${urls.user}/users/${a.id}/balance/add`, {
        body: { amount: 1 },
        headers: asAdmin(),
      }),
    );
    remember(await call("DELETE", `${urls.user}/users/${id}`, { headers: asAdmin() }));
    assert.ok(seen.length >= 6);
    for (const body of seen) {
      assert.doesNotMatch(body, /"password(_hash)?"|"hash"|scrypt\$|p4ssw0rd|correct horse/i, body);
    }
  });

  it("stores SQL-looking input literally, and refuses it where the rules say no", async () => {
    // The username rule refuses quotes: 400, nothing created.
    const quoted = await call("POST", `${urls.user}/users`, {
      body: { username: "o'neil", password: PASSWORD },
    });
    assertError(quoted, 400, "invalid_request");
    assert.match(quoted.body.message, /username/);
    // A password takes any characters: stored (hashed) literally, so only the exact string logs in.
    const username = uniqueName("bobby");
    const password = "x' OR '1'='1'; DROP TABLE users; --";
    assert.equal((await call("POST", `${urls.user}/users`, { body: { username, password } })).status, 201);
    await login(username, password);
    for (const guess of ["' OR '1'='1", "x' OR '1'='1", "x"]) {
      assertError(
        await call("POST", `${urls.user}/auth/login`, { body: { username, password: guess } }),
        401,
      );
    }
    assertError(
      await call("POST", `${urls.user}/auth/login`, {
        body: { username: "' OR '1'='1' --", password: "' OR ''='" },
      }),
      401,
    );
    // Ids are checked before any query.
    const a = await createUser(100);
    for (const id of ["1%20OR%201=1", "1;DROP%20TABLE%20users", "0x10", "1e3", "-1", "%20%207"]) {
      assertError(await call("GET", `${urls.user}/users/${id}`, { headers: asAdmin() }), 400);
      assertError(
        await call("GET", `${urls.transaction}/transactions/user/${id}`, { headers: bearer(a.token) }),
        400,
      );
    }
    assertError(
      await call("GET", `${urls.transaction}/transactions/1%20OR%201=1`, { headers: bearer(a.token) }),
      400,
    );
    // An idempotency key with SQL in it is just a key: replayed as such.
    const b = await createUser();
    const key = "';DELETE-FROM-transfers;--";
    const body = { source_user_id: a.id, dest_user_id: b.id, amount: 3 };
    const first = await transfer(body, key, a.token);
    assert.equal(first.status, 201, JSON.stringify(first.body));
    const again = await transfer(body, key, a.token);
    assert.equal(again.body.data.transaction.id, first.body.data.transaction.id);
    assertError(await transfer(body, "has spaces ' OR 1=1", a.token), 400);
    await settled(first.body.data.transaction.id, a.token);
  });

  it("answers a 2 MB body with 413, invalid JSON with 400 and another media type with 415", async () => {
    const a = await createUser(100);
    const big = JSON.stringify({ username: "x".repeat(2 * 1024 * 1024), password: PASSWORD });
    const json = { "content-type": "application/json" };
    const tooLarge = await raw("POST", `${urls.user}/users`, big, json);
    assertError(tooLarge, 413, "body_too_large");
    // The connection stays open while the rest of the body is read and dropped, so a sender
    // still writing it reads the 413 instead of meeting a closed socket.
    assert.notEqual(tooLarge.headers.get("connection"), "close");
    assertError(
      await raw("POST", `${urls.transaction}/transactions/transfer`, big, { ...json, ...bearer(a.token) }),
      413,
      "body_too_large",
    );
    for (const text of ["{not json", "", "[1,", '{"username": "a"', "null"]) {
      assertError(await raw("POST", `${urls.user}/users`, text, json), 400);
      assertError(
        await raw("POST", `${urls.transaction}/transactions/transfer`, text, { ...json, ...bearer(a.token) }),
        400,
      );
    }
    const form = { "content-type": "application/x-www-form-urlencoded" };
    assertError(
      await raw("POST", `${urls.user}/users`, "username=a&password=b", form),
      415,
      "unsupported_media_type",
    );
    assertError(
      await raw("POST", `${urls.user}/auth/login`, JSON.stringify({ username: "a", password: "b" }), {
        "content-type": "text/plain",
      }),
      415,
    );
    assertError(
      await raw("POST", `${urls.transaction}/transactions/transfer`, "{}", {
        "content-type": "text/xml",
        ...bearer(a.token),
      }),
      415,
    );
  });

  it("refuses amounts that are not positive integers up to 2^53-1: 400, and nothing moves", async () => {
    const a = await createUser(1_000);
    const b = await createUser();
    const amounts: unknown[] = [0, -1, -0.5, 1.5, "10", "1e3", 2 ** 53, 1e300, null, true, [1], { n: 1 }];
    for (const amount of amounts) {
      const answer = await transfer({ source_user_id: a.id, dest_user_id: b.id, amount }, undefined, a.token);
      assertError(answer, 400, "invalid_request");
      assert.match(answer.body.message, /amount/);
      assertError(
        await call("POST", `${urls.user}/users/${b.id}/balance/add`, {
          body: { amount },
          headers: asAdmin(),
        }),
        400,
      );
    }
    // 2^53 in JSON text parses to a number beyond the safe range: refused, not rounded.
    const beyond = `{"source_user_id":${a.id},"dest_user_id":${b.id},"amount":9007199254740993}`;
    assertError(
      await raw("POST", `${urls.transaction}/transactions/transfer`, beyond, {
        "content-type": "application/json",
        ...bearer(a.token),
      }),
      400,
    );
    const balances = await Promise.all(
      [a, b].map((u) => call("GET", `${urls.user}/users/${u.id}`, { headers: asAdmin() })),
    );
    assert.deepEqual(
      balances.map((x) => x.body.data.user.balance),
      [1_000, 0],
    );
  });

  it("refuses an idempotency key reused with another body (422), scoped to its user", async () => {
    const a = await createUser(1_000);
    const b = await createUser(1_000);
    const key = uniqueName("shared-key");
    const first = await transfer({ source_user_id: a.id, dest_user_id: b.id, amount: 5 }, key, a.token);
    assert.equal(first.status, 201);
    const other = await transfer({ source_user_id: a.id, dest_user_id: b.id, amount: 6 }, key, a.token);
    assertError(other, 422, "idempotency_key_reused");
    // The same key from another user is another user's request, not a collision.
    const theirs = await transfer({ source_user_id: b.id, dest_user_id: a.id, amount: 6 }, key, b.token);
    assert.equal(theirs.status, 201, JSON.stringify(theirs.body));
    assert.notEqual(theirs.body.data.transaction.id, first.body.data.transaction.id);
    await settled(first.body.data.transaction.id, a.token);
    await settled(theirs.body.data.transaction.id, b.token);
  });
});

describe("limits", () => {
  it("rate-limits each user: 429 with Retry-After past the per-window limit", async (t) => {
    const a = await createUser();
    const b = await createUser();
    // A request that passes the limiter and is then refused cheaply (limit=1000 is out of range).
    const url = `${urls.transaction}/transactions/user/${a.id}?limit=1000`;
    const probe = await call("GET", url, { headers: bearer(a.token) });
    assertError(probe, 400);
    const limit = Number(probe.headers.get("ratelimit-limit"));
    if (!(limit > 0)) {
      t.skip("the rate limit is off (RATE_LIMIT_MAX=0)");
      return;
    }
    if (limit > 500) {
      t.skip(`the rate limit (${limit}) is too high to reach here; the limiter has its own unit test`);
      return;
    }
    const refusals = () =>
      scrapeSample(internalUrls.transaction, "dps_rate_limit_refusals_total", {
        route: "/transactions/user/:user_id",
        limit: "user",
      });
    const refusals_before = (await refusals()) ?? 0;
    // 2*limit+1 requests at once fall in at most two windows, so at least one window overflows.
    const answers = await Promise.all(
      Array.from({ length: 2 * limit + 1 }, () => call("GET", url, { headers: bearer(a.token) })),
    );
    const limited = answers.filter((x) => x.status === 429);
    assert.ok(limited.length > 0, `no 429 among ${answers.length} requests (limit ${limit})`);
    for (const answer of limited) {
      assertError(answer, 429, "rate_limited");
      const retryAfter = Number(answer.headers.get("retry-after"));
      assert.ok(Number.isInteger(retryAfter) && retryAfter >= 1, `Retry-After ${retryAfter}`);
    }
    assert.ok(((await refusals()) ?? 0) >= refusals_before + limited.length, "dps_rate_limit_refusals_total");
    // Another user is not affected.
    const other = await call("GET", `${urls.transaction}/transactions/user/${b.id}`, {
      headers: bearer(b.token),
    });
    assert.equal(other.status, 200, JSON.stringify(other.body));
  });

  it("throttles log-ins per username: ten wrong passwords in a row, then 429 with Retry-After", async () => {
    const a = await createUser();
    const wrong = { username: a.username, password: "not the password" };
    for (let i = 0; i < 10; i++) {
      assertError(await call("POST", `${urls.user}/auth/login`, { body: wrong }), 401, "invalid_credentials");
    }
    for (const password of ["not the password", PASSWORD]) {
      const limited = await call("POST", `${urls.user}/auth/login`, {
        body: { username: a.username, password },
      });
      assertError(limited, 429, "rate_limited");
      const retryAfter = Number(limited.headers.get("retry-after"));
      assert.ok(Number.isInteger(retryAfter) && retryAfter >= 1, `Retry-After ${retryAfter}`);
    }
    // Another username from the same address is not affected, and the user's token still works.
    const b = await createUser();
    await login(b.username, PASSWORD);
    assert.equal((await call("GET", `${urls.user}/users/${a.id}`, { headers: bearer(a.token) })).status, 200);
  });

  it("marks credential answers no-store and every answer nosniff", async () => {
    const a = await createUser();
    const answers = [
      await call("POST", `${urls.user}/auth/login`, { body: { username: a.username, password: PASSWORD } }),
      await call("POST", `${urls.user}/auth/login`, {
        body: { username: a.username, password: "wrong password" },
      }),
    ];
    for (const answer of answers) assert.equal(answer.headers.get("cache-control"), "no-store");
    for (const base of Object.values(urls)) {
      for (const path of ["/health", "/openapi.json", "/no-such-route"]) {
        const answer = await call("GET", `${base}${path}`);
        assert.equal(answer.headers.get("x-content-type-options"), "nosniff", `${base}${path}`);
      }
    }
    const failed = await call("GET", `${urls.user}/users/${a.id}`);
    assert.equal(failed.headers.get("x-content-type-options"), "nosniff");
  });

  it("caps page sizes", async () => {
    const a = await createUser();
    assertError(await call("GET", `${urls.user}/users?limit=101`, { headers: asAdmin() }), 400);
    assertError(
      await call("GET", `${urls.query}/transactions/user/${a.id}?limit=101`, { headers: asAdmin() }),
      400,
    );
    const max = await call("GET", `${urls.transaction}/transactions/user/${a.id}?limit=100`, {
      headers: bearer(a.token),
    });
    assert.equal(max.status, 200);
  });
});
