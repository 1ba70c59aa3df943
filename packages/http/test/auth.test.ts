import assert from "node:assert/strict";
import { createHash } from "node:crypto";
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

const sha256 = (text: string): string => createHash("sha256").update(text).digest("hex");
const secrets = {
  admin_token: "admin-token-0123456789abcdef",
  ledger_token: "ledger-token-0123456789abcdef",
  query_token: "query-token-0123456789abcdef",
  token_secret: "token-secret-0123456789abcdef-0123456789",
  token_ttl_s: 900,
};
const checked = {
  admin_sha256: sha256(secrets.admin_token),
  ledger_sha256: sha256(secrets.ledger_token),
  token_secret: secrets.token_secret,
  token_ttl_s: secrets.token_ttl_s,
};
const auth = new Authenticator(checked);
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
    const fresh = new Authenticator(checked);
    // Issued so that it expires 2 s from now (the ttl is 900 s).
    const issued = await fresh.issueUserToken(7, 0, now() - 898);
    const header = `Bearer ${issued.access_token}`;
    assert.deepEqual(await fresh.authenticate(header), { kind: "user", user_id: 7 });
    assert.deepEqual(await fresh.authenticate(header), { kind: "user", user_id: 7 });
    // A token with one changed signature byte is not the remembered one. (The byte is changed in
    // the decoded signature: editing the base64url text's last characters can leave the bytes
    // as they were, since its last character carries unused bits.)
    const [head, body, signature] = issued.access_token.split(".");
    const bytes = Buffer.from(signature ?? "", "base64url");
    bytes[0] = (bytes[0] ?? 0) ^ 0xff;
    const forged = `${head}.${body}.${bytes.toString("base64url")}`;
    assert.equal((await refusal(fresh.authenticate(`Bearer ${forged}`))).status, 401);
    // Past its expiry (and jose's 5 s of clock tolerance) the remembered token is refused too.
    t.mock.timers.enable({ apis: ["Date"], now: Date.now() + 10_000 });
    assert.equal((await refusal(fresh.authenticate(header))).status, 401);
  });

  it("refuses an expired token with 401", async () => {
    const old = await auth.issueUserToken(42, 0, now() - 1_000);
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
      admin_sha256: checked.admin_sha256,
      query_sha256: sha256(secrets.query_token),
    });
    await assert.rejects(readSide.issueUserToken(1), /invariant/);
    const token = (await auth.issueUserToken(1)).access_token;
    assert.equal((await refusal(readSide.authenticate(`Bearer ${token}`))).status, 401);
  });
});

describe("static credentials and headers", () => {
  it("recognises the operator and ledger credentials by their digests, and no other", async () => {
    assert.deepEqual(await auth.authenticate(`Bearer ${secrets.admin_token}`), { kind: "admin" });
    assert.deepEqual(await auth.authenticate(`bearer ${secrets.ledger_token}`), { kind: "ledger" });
    // The query credential is not one this authenticator checks: no credential at all here.
    assert.equal((await refusal(auth.authenticate(`Bearer ${secrets.query_token}`))).status, 401);
    // A digest presented as a credential is nothing either.
    assert.equal((await refusal(auth.authenticate(`Bearer ${checked.admin_sha256}`))).status, 401);
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
    const ledger = request(`Bearer ${secrets.ledger_token}`);
    assert.equal((await refusal(auth.guard("user", "admin")(ledger))).status, 403);
    await auth.guard("ledger")(ledger);
    assert.deepEqual(principalOf(ledger), { kind: "ledger" });
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
    assert.throws(() => requireSelfOrAdmin({ kind: "ledger" }, 3, "user 3"), { status: 403 });
  });
});

describe("secrets at start", () => {
  const base: AuthEnv = { AUTH_TOKEN_TTL_S: 900, ALLOW_INSECURE_DEV: false };
  const userService = { checks: ["ADMIN_TOKEN", "LEDGER_TOKEN"], token_secret: true } as const;
  const saga = {
    checks: ["ADMIN_TOKEN"],
    presents: ["LEDGER_TOKEN", "QUERY_TOKEN"],
    token_secret: true,
  } as const;
  const good: AuthEnv = {
    ...base,
    ADMIN_TOKEN: secrets.admin_token,
    LEDGER_TOKEN: secrets.ledger_token,
    QUERY_TOKEN: secrets.query_token,
    AUTH_TOKEN_SECRET: secrets.token_secret,
  };

  it("refuses to start without the secrets a service needs", () => {
    for (const name of ["ADMIN_TOKEN", "LEDGER_TOKEN", "QUERY_TOKEN", "AUTH_TOKEN_SECRET"]) {
      assert.throws(() => resolveSecrets(base, saga), new RegExp(`${name} is required`));
    }
    assert.doesNotThrow(() =>
      resolveSecrets({ ...base, ADMIN_TOKEN: secrets.admin_token }, { checks: ["ADMIN_TOKEN"] }),
    );
  });

  it("takes a checked credential as its digest, and a presented one only as the secret", () => {
    const digests = {
      ...base,
      ADMIN_TOKEN_SHA256: sha256(secrets.admin_token),
      LEDGER_TOKEN_SHA256: sha256(secrets.ledger_token),
      AUTH_TOKEN_SECRET: secrets.token_secret,
    };
    const { secrets: resolved } = resolveSecrets(digests, userService);
    assert.equal(resolved.admin_sha256, sha256(secrets.admin_token));
    assert.equal(resolved.ledger_sha256, sha256(secrets.ledger_token));
    assert.equal(resolved.ledger_token, undefined);
    // The saga presents LEDGER_TOKEN: its digest is not enough.
    assert.throws(
      () => resolveSecrets({ ...digests, QUERY_TOKEN: secrets.query_token }, saga),
      /LEDGER_TOKEN is required/,
    );
    assert.throws(
      () => resolveSecrets({ ...digests, ADMIN_TOKEN_SHA256: "ABC" }, userService),
      /64 lower-case hex/,
    );
    assert.throws(
      () => resolveSecrets({ ...digests, ADMIN_TOKEN: "another-admin-token-0123" }, userService),
      /not the SHA-256/,
    );
  });

  it("refuses short, non-printable or shared secrets", () => {
    assert.equal(resolveSecrets(good, saga).secrets.token_secret, secrets.token_secret);
    assert.equal(resolveSecrets(good, saga).secrets.ledger_token, secrets.ledger_token);
    assert.throws(() => resolveSecrets({ ...good, AUTH_TOKEN_SECRET: "short" }, saga), /at least 32/);
    assert.throws(() => resolveSecrets({ ...good, ADMIN_TOKEN: "with a space in it!!" }, saga), /printable/);
    assert.throws(() => resolveSecrets({ ...good, LEDGER_TOKEN: good.ADMIN_TOKEN }, saga), /must differ/);
    assert.throws(() => resolveSecrets({ ...good, QUERY_TOKEN: good.LEDGER_TOKEN }, saga), /must differ/);
    const key = "a-key-long-enough-for-hs256-0123456789";
    assert.throws(
      () => resolveSecrets({ ...good, ADMIN_TOKEN: key, AUTH_TOKEN_SECRET: key }, saga),
      /ADMIN_TOKEN and AUTH_TOKEN_SECRET must differ/,
    );
    // Equal as digests too: a checked digest equal to another credential is refused.
    assert.throws(
      () =>
        resolveSecrets(
          {
            ...base,
            ADMIN_TOKEN_SHA256: sha256(secrets.ledger_token),
            LEDGER_TOKEN_SHA256: sha256(secrets.ledger_token),
            AUTH_TOKEN_SECRET: secrets.token_secret,
          },
          userService,
        ),
      /must differ/,
    );
  });

  it("uses the fixed development values, loudly, only with ALLOW_INSECURE_DEV and only on loopback", () => {
    const dev = { ...base, ALLOW_INSECURE_DEV: true };
    const { secrets: resolved, warnings } = resolveSecrets(dev, saga);
    assert.equal(resolved.ledger_token, INSECURE_DEV_SECRETS.LEDGER_TOKEN);
    assert.equal(resolved.admin_sha256, sha256(INSECURE_DEV_SECRETS.ADMIN_TOKEN));
    assert.equal(resolved.token_secret, INSECURE_DEV_SECRETS.AUTH_TOKEN_SECRET);
    assert.equal(warnings.length, 4);
    for (const warning of warnings) assert.match(warning, /PUBLIC/);
    for (const host of ["127.0.0.1", "127.0.0.2", "localhost", "::1"]) {
      assert.doesNotThrow(
        () => resolveSecrets({ ...dev, HOST: host, INTERNAL_HOST: "127.0.0.1" }, saga),
        host,
      );
    }
    for (const host of ["0.0.0.0", "::", "10.0.0.5", "example.com", "128.0.0.1"]) {
      assert.throws(() => resolveSecrets({ ...dev, HOST: host }, saga), /loopback only/, host);
      assert.throws(() => resolveSecrets({ ...dev, INTERNAL_HOST: host }, saga), /loopback only/, host);
    }
    // Real secrets on a public address are fine: only the development values are refused there.
    assert.doesNotThrow(() => resolveSecrets({ ...good, HOST: "0.0.0.0" }, saga));
  });
});
