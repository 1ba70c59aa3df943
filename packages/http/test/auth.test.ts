import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { FastifyRequest } from "fastify";
import { SignJWT } from "jose";
import {
  type AuthEnv,
  Authenticator,
  INSECURE_DEV_SECRETS,
  principalOf,
  requireSelfOrAdmin,
  resolveSecrets,
  TOKEN_AUDIENCE,
  TOKEN_ISSUER,
  TOKEN_TYPE,
} from "../auth.ts";
import { ApiError } from "../errors.ts";

const secrets = {
  admin_token: "admin-token-0123456789abcdef",
  service_token: "service-token-0123456789abcdef",
  token_secret: "token-secret-0123456789abcdef-0123456789",
  token_ttl_s: 900,
};
const auth = new Authenticator(secrets);
const key = new TextEncoder().encode(secrets.token_secret);
const now = () => Math.floor(Date.now() / 1000);

async function refusal(promise: Promise<unknown>): Promise<ApiError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof ApiError, String(error));
    return error;
  }
  assert.fail("expected a refusal");
}

function sign(
  claims: { sub?: string; iss?: string; aud?: string; iat?: number; exp?: number },
  header: { alg: string; typ?: string } = { alg: "HS256", typ: TOKEN_TYPE },
  with_key: Uint8Array = key,
): Promise<string> {
  const jwt = new SignJWT({}).setProtectedHeader(header);
  if (claims.sub !== undefined) jwt.setSubject(claims.sub);
  jwt.setIssuer(claims.iss ?? TOKEN_ISSUER);
  jwt.setAudience(claims.aud ?? TOKEN_AUDIENCE);
  jwt.setIssuedAt(claims.iat ?? now());
  if (claims.exp !== undefined) jwt.setExpirationTime(claims.exp);
  return jwt.sign(with_key);
}

describe("user access tokens", () => {
  it("issues a token that authenticates as its user, expiring after the ttl", async () => {
    const issued = await auth.issueUserToken(42);
    assert.equal(issued.token_type, "Bearer");
    assert.equal(issued.expires_in, 900);
    assert.deepEqual(await auth.authenticate(`Bearer ${issued.access_token}`), { kind: "user", user_id: 42 });
    const [header, payload] = issued.access_token
      .split(".")
      .slice(0, 2)
      .map((p) => JSON.parse(Buffer.from(p, "base64url").toString()));
    assert.deepEqual(header, { alg: "HS256", typ: TOKEN_TYPE });
    assert.equal(payload.sub, "42");
    assert.equal(payload.exp - payload.iat, 900);
  });

  it("remembers a verified token only until it expires", async (t) => {
    const fresh = new Authenticator(secrets);
    // Issued so that it expires 2 s from now (the ttl is 900 s).
    const issued = await fresh.issueUserToken(7, now() - 898);
    const header = `Bearer ${issued.access_token}`;
    assert.deepEqual(await fresh.authenticate(header), { kind: "user", user_id: 7 });
    assert.deepEqual(await fresh.authenticate(header), { kind: "user", user_id: 7 });
    // A token with one changed signature byte is not the remembered one.
    const forged = `${issued.access_token.slice(0, -2)}${issued.access_token.endsWith("A") ? "BB" : "AA"}`;
    assert.equal((await refusal(fresh.authenticate(`Bearer ${forged}`))).status, 401);
    // Past its expiry (and jose's 5 s of clock tolerance) the remembered token is refused too.
    t.mock.timers.enable({ apis: ["Date"], now: Date.now() + 10_000 });
    assert.equal((await refusal(fresh.authenticate(header))).status, 401);
  });

  it("refuses an expired token with 401", async () => {
    const old = await auth.issueUserToken(42, now() - 1_000);
    const error = await refusal(auth.authenticate(`Bearer ${old.access_token}`));
    assert.equal(error.status, 401);
    assert.equal(error.message, "token expired");
    assert.match(error.headers?.["www-authenticate"] ?? "", /invalid_token/);
  });

  it("refuses forged, tampered and foreign tokens with 401", async () => {
    const good = (await auth.issueUserToken(7)).access_token;
    const [h, p, s] = good.split(".") as [string, string, string];
    const claims = JSON.parse(Buffer.from(p, "base64url").toString());
    const tampered = `${h}.${Buffer.from(JSON.stringify({ ...claims, sub: "8" })).toString("base64url")}.${s}`;
    const none = `${Buffer.from(JSON.stringify({ alg: "none", typ: TOKEN_TYPE })).toString("base64url")}.${p}.`;
    const exp = now() + 60;
    const bad = [
      tampered,
      none,
      `${h}.${p}`,
      "not-a-token",
      await sign({ sub: "7", exp }, undefined, new TextEncoder().encode("another-secret-another-secret-xx")),
      await sign({ sub: "7", exp, iss: "someone-else" }),
      await sign({ sub: "7", exp, aud: "another-api" }),
      await sign({ sub: "7", exp }, { alg: "HS256", typ: "JWT" }), // not an access token
      await sign({ sub: "7", exp }, { alg: "HS512", typ: TOKEN_TYPE }),
      await sign({ sub: "7" }), // never expires
      await sign({ exp }), // no subject
      await sign({ sub: "0", exp }),
      await sign({ sub: "007", exp }),
      await sign({ sub: "1 OR 1=1", exp }),
      await sign({ sub: "99999999999999999", exp }),
    ];
    for (const token of bad) {
      const error = await refusal(auth.authenticate(`Bearer ${token}`));
      assert.equal(error.status, 401, token);
      assert.equal(error.code, "unauthorized");
    }
  });

  it("cannot issue without a signing key, and a service without one accepts no user token", async () => {
    const readSide = new Authenticator({
      admin_token: secrets.admin_token,
      service_token: secrets.service_token,
    });
    await assert.rejects(readSide.issueUserToken(1), /invariant/);
    const token = (await auth.issueUserToken(1)).access_token;
    assert.equal((await refusal(readSide.authenticate(`Bearer ${token}`))).status, 401);
  });
});

describe("static credentials and headers", () => {
  it("recognises the operator and service credentials", async () => {
    assert.deepEqual(await auth.authenticate(`Bearer ${secrets.admin_token}`), { kind: "admin" });
    assert.deepEqual(await auth.authenticate(`bearer ${secrets.service_token}`), { kind: "service" });
    assert.equal((await refusal(auth.authenticate(`Bearer ${secrets.admin_token}x`))).status, 401);
    assert.equal((await refusal(auth.authenticate(`Bearer ${secrets.admin_token.slice(1)}`))).status, 401);
  });

  it("treats no header as anonymous and a malformed one as 401", async () => {
    assert.equal(await auth.authenticate(undefined), null);
    assert.equal(await auth.authenticate(""), null);
    for (const header of [
      "Bearer",
      "Bearer ",
      `Basic ${secrets.admin_token}`,
      secrets.admin_token,
      `Bearer ${secrets.admin_token} extra`,
      `Bearer ${"a".repeat(5_000)}`,
    ]) {
      const error = await refusal(auth.authenticate(header));
      assert.equal(error.status, 401, header);
    }
  });
});

describe("guards", () => {
  const request = (authorization?: string) => ({ headers: { authorization } }) as unknown as FastifyRequest;

  it("answers 401 without a credential, 403 for the wrong kind, and records the caller", async () => {
    const adminOnly = auth.guard("admin");
    assert.equal((await refusal(adminOnly(request()))).status, 401);
    const user = (await auth.issueUserToken(5)).access_token;
    const forbidden = await refusal(adminOnly(request(`Bearer ${user}`)));
    assert.equal(forbidden.status, 403);
    assert.equal(forbidden.code, "forbidden");
    const ok = request(`Bearer ${secrets.admin_token}`);
    await adminOnly(ok);
    assert.deepEqual(principalOf(ok), { kind: "admin" });
    const service = request(`Bearer ${secrets.service_token}`);
    assert.equal((await refusal(auth.guard("user", "admin")(service))).status, 403);
  });

  it("lets anonymous callers through optional() but not a bad credential", async () => {
    const anonymous = request();
    await auth.optional()(anonymous);
    assert.equal(principalOf(anonymous), null);
    assert.equal((await refusal(auth.optional()(request("Bearer nope")))).status, 401);
  });

  it("lets users act on their own wallet only, and the operator on any", () => {
    requireSelfOrAdmin({ kind: "user", user_id: 3 }, 3, "user 3");
    requireSelfOrAdmin({ kind: "admin" }, 3, "user 3");
    assert.throws(() => requireSelfOrAdmin({ kind: "user", user_id: 4 }, 3, "user 3"), { status: 403 });
    assert.throws(() => requireSelfOrAdmin({ kind: "service" }, 3, "user 3"), { status: 403 });
  });
});

describe("secrets at start", () => {
  const base: AuthEnv = {
    ADMIN_TOKEN: "",
    SERVICE_TOKEN: "",
    AUTH_TOKEN_SECRET: "",
    AUTH_TOKEN_TTL_S: 900,
    ALLOW_INSECURE_DEV: false,
  };
  const all = ["ADMIN_TOKEN", "SERVICE_TOKEN", "AUTH_TOKEN_SECRET"] as const;

  it("refuses to start without the secrets a service needs", () => {
    assert.throws(
      () => resolveSecrets(base, all),
      /ADMIN_TOKEN is required[\s\S]*SERVICE_TOKEN[\s\S]*AUTH_TOKEN_SECRET/,
    );
    assert.doesNotThrow(() => resolveSecrets({ ...base, ADMIN_TOKEN: secrets.admin_token }, ["ADMIN_TOKEN"]));
  });

  it("refuses short, non-printable or shared secrets", () => {
    const good = {
      ...base,
      ADMIN_TOKEN: secrets.admin_token,
      SERVICE_TOKEN: secrets.service_token,
      AUTH_TOKEN_SECRET: secrets.token_secret,
    };
    assert.equal(resolveSecrets(good, all).secrets.token_secret, secrets.token_secret);
    assert.throws(() => resolveSecrets({ ...good, AUTH_TOKEN_SECRET: "short" }, all), /at least 32/);
    assert.throws(() => resolveSecrets({ ...good, ADMIN_TOKEN: "with a space in it!!" }, all), /printable/);
    assert.throws(() => resolveSecrets({ ...good, SERVICE_TOKEN: good.ADMIN_TOKEN }, all), /must differ/);
  });

  it("uses the fixed development values, loudly, only with ALLOW_INSECURE_DEV", () => {
    const { secrets: dev, warnings } = resolveSecrets({ ...base, ALLOW_INSECURE_DEV: true }, all);
    assert.equal(dev.admin_token, INSECURE_DEV_SECRETS.ADMIN_TOKEN);
    assert.equal(dev.token_secret, INSECURE_DEV_SECRETS.AUTH_TOKEN_SECRET);
    assert.equal(warnings.length, 3);
    for (const warning of warnings) assert.match(warning, /PUBLIC/);
  });
});
