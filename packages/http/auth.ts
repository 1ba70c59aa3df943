/**
 * Who is calling, for every service, in one place.
 *
 * Four credentials travel as `Authorization: Bearer <value>`:
 * - a user's access token: a JWT (HS256, key AUTH_TOKEN_SECRET) that user-service issues on
 *   `POST /auth/login`, short-lived (AUTH_TOKEN_TTL_S), whose subject is the user id and whose
 *   `ver` claim is the user's token version (a password change or a lock raises it, which
 *   revokes every token issued before);
 * - the operator credential ADMIN_TOKEN (opening balances, deposits, listing users, locking
 *   accounts, reading any record, ops routes; never spending, never setting a password);
 * - LEDGER_TOKEN, which only transaction-service holds: the one credential the ledger's saga
 *   steps accept, so nothing else can move money;
 * - QUERY_TOKEN, which transaction-service presents to transaction-query-service.
 *
 * A service that only checks a credential holds its digest (`<NAME>_SHA256`, lower-case hex
 * SHA-256), so reading its environment never yields a credential it could present elsewhere.
 *
 * Routes declare which kinds of caller they accept with `guard(...)` (an onRequest hook, so an
 * unauthenticated caller is answered 401 before its body is even read), and handlers narrow
 * further (a user may act only on their own wallet) with `requireSelfOrAdmin`. A credential
 * that is present but malformed, unknown, expired or revoked is always 401, even on a public
 * route; a valid credential of the wrong kind, or a user acting on another user's wallet, is 403.
 *
 * Secrets are required at start. ALLOW_INSECURE_DEV=true replaces missing ones by fixed,
 * publicly known development values (never an "open" mode: the same checks run either way), and
 * only on loopback.
 */
import { createHash, timingSafeEqual, webcrypto } from "node:crypto";
import { isIP } from "node:net";
import type { FastifyReply, FastifyRequest } from "fastify";
import { errors as joseErrors, jwtVerify, SignJWT } from "jose";
import { z } from "zod";
import { assert } from "#packages/runtime/assert.ts";
import { BoundedMap } from "#packages/runtime/bounded-map.ts";
import { ApiError } from "./errors.ts";

export type Principal =
  | { kind: "admin" }
  | { kind: "ledger" }
  | { kind: "query" }
  | { kind: "user"; user_id: number };
export type PrincipalKind = Principal["kind"];

export const TOKEN_ISSUER = "dps:user-service";
export const TOKEN_AUDIENCE = "dps";
/** RFC 9068's media type for JWT access tokens: a token minted for another purpose is refused. */
export const TOKEN_TYPE = "at+jwt";

/** Credentials a service may check (by digest) or present (the secret itself). */
export type CredentialName = "ADMIN_TOKEN" | "LEDGER_TOKEN" | "QUERY_TOKEN";
export type SecretName = CredentialName | "AUTH_TOKEN_SECRET";

/** Fixed values used only with ALLOW_INSECURE_DEV=true. Public by definition: never secure. */
export const INSECURE_DEV_SECRETS: Readonly<Record<SecretName, string>> = {
  ADMIN_TOKEN: "insecure-dev-admin-token-not-a-secret",
  LEDGER_TOKEN: "insecure-dev-ledger-token-not-a-secret",
  QUERY_TOKEN: "insecure-dev-query-token-not-a-secret",
  AUTH_TOKEN_SECRET: "insecure-dev-auth-token-secret-not-a-secret",
};

const MIN_LENGTH: Readonly<Record<SecretName, number>> = {
  ADMIN_TOKEN: 16,
  LEDGER_TOKEN: 16,
  QUERY_TOKEN: 16,
  // HS256 wants a key of at least 256 bits; 32 characters of base64url carry 192 random bits
  // (what `npm start` generates), the length is a floor against typed-in short keys.
  AUTH_TOKEN_SECRET: 32,
};

export interface AuthEnv {
  HOST?: string | undefined;
  INTERNAL_HOST?: string | undefined;
  ADMIN_TOKEN?: string | undefined;
  ADMIN_TOKEN_SHA256?: string | undefined;
  LEDGER_TOKEN?: string | undefined;
  LEDGER_TOKEN_SHA256?: string | undefined;
  QUERY_TOKEN?: string | undefined;
  QUERY_TOKEN_SHA256?: string | undefined;
  AUTH_TOKEN_SECRET?: string | undefined;
  AUTH_TOKEN_TTL_S?: number | undefined;
  ALLOW_INSECURE_DEV: boolean;
}

/** What a service does with each credential: checks callers' (digest suffices) or presents its own. */
export interface CredentialNeeds {
  checks?: readonly CredentialName[];
  presents?: readonly CredentialName[];
  /** Signs or verifies users' access tokens. */
  token_secret?: boolean;
}

export interface AuthSecrets {
  /** Lower-case hex SHA-256 of each credential this service accepts. */
  admin_sha256?: string | undefined;
  ledger_sha256?: string | undefined;
  query_sha256?: string | undefined;
  /** Credentials this service presents to others. */
  ledger_token?: string | undefined;
  query_token?: string | undefined;
  token_secret?: string | undefined;
  token_ttl_s?: number | undefined;
}

const sha256Hex = (text: string): string => createHash("sha256").update(text).digest("hex");
const HEX_DIGEST = /^[0-9a-f]{64}$/;

/** Loopback only: 127.0.0.0/8, ::1 and localhost. Anything else is reachable by others. */
export function isLoopbackHost(host: string): boolean {
  if (host === "localhost" || host === "::1" || host === "[::1]") return true;
  return isIP(host) === 4 && host.startsWith("127.");
}

type Problems = string[];

/** One secret's value: given, or (ALLOW_INSECURE_DEV) the public development value; checked. */
function secretValue(config: AuthEnv, name: SecretName, problems: Problems, warnings: string[]) {
  let given = config[name] ?? "";
  if (given === "") {
    if (!config.ALLOW_INSECURE_DEV) {
      problems.push(
        `${name} is required (npm start generates one into .data/secrets.env; ALLOW_INSECURE_DEV=true uses a fixed, public development value)`,
      );
      return undefined;
    }
    given = INSECURE_DEV_SECRETS[name];
    warnings.push(`${name} is not set: using its fixed, PUBLIC development value (ALLOW_INSECURE_DEV=true)`);
  }
  if (given.length < MIN_LENGTH[name])
    problems.push(`${name} must be at least ${MIN_LENGTH[name]} characters`);
  if (!/^[\x21-\x7e]+$/.test(given)) problems.push(`${name} must be printable ASCII without spaces`);
  return given;
}

/** The digest of a credential this service checks: from `<NAME>_SHA256`, or hashed from `<NAME>`. */
function checkedDigest(config: AuthEnv, name: CredentialName, problems: Problems, warnings: string[]) {
  const given = config[`${name}_SHA256`] ?? "";
  const secret = config[name] ?? "";
  if (given !== "" && !HEX_DIGEST.test(given)) {
    problems.push(`${name}_SHA256 must be 64 lower-case hex digits (the SHA-256 of ${name})`);
    return undefined;
  }
  if (given !== "" && secret === "") return given;
  const value = secretValue(config, name, problems, warnings);
  if (value === undefined) return undefined;
  const digest = sha256Hex(value);
  if (given !== "" && given !== digest) problems.push(`${name}_SHA256 is not the SHA-256 of ${name}`);
  return digest;
}

/**
 * The secrets a service needs, checked: each present (or, with ALLOW_INSECURE_DEV on loopback,
 * its fixed development value), long enough, printable, and all different (so one can never
 * pass for another). Throws with a message naming each problem.
 */
export function resolveSecrets(
  config: AuthEnv,
  needs: CredentialNeeds,
): { secrets: AuthSecrets; warnings: string[] } {
  const problems: Problems = [];
  const warnings: string[] = [];
  if (config.ALLOW_INSECURE_DEV) {
    for (const [name, host] of [
      ["HOST", config.HOST],
      ["INTERNAL_HOST", config.INTERNAL_HOST],
    ] as const) {
      if (host !== undefined && !isLoopbackHost(host))
        problems.push(`ALLOW_INSECURE_DEV=true is for loopback only; ${name}=${host} is reachable by others`);
    }
  }
  const digests = new Map<SecretName, string>();
  const presented: Partial<Record<CredentialName, string>> = {};
  for (const name of needs.presents ?? []) {
    const value = secretValue(config, name, problems, warnings);
    if (value === undefined) continue;
    presented[name] = value;
    digests.set(name, sha256Hex(value));
  }
  for (const name of needs.checks ?? []) {
    if (digests.has(name)) continue;
    const digest = checkedDigest(config, name, problems, warnings);
    if (digest !== undefined) digests.set(name, digest);
  }
  let token_secret: string | undefined;
  if (needs.token_secret === true) {
    token_secret = secretValue(config, "AUTH_TOKEN_SECRET", problems, warnings);
    if (token_secret !== undefined) digests.set("AUTH_TOKEN_SECRET", sha256Hex(token_secret));
  }
  const seen = new Map<string, SecretName>();
  for (const [name, digest] of digests) {
    const other = seen.get(digest);
    if (other !== undefined) problems.push(`${other} and ${name} must differ`);
    seen.set(digest, name);
  }
  if (problems.length > 0) throw new Error(`invalid security configuration:\n  ${problems.join("\n  ")}`);
  return {
    secrets: {
      admin_sha256: (needs.checks ?? []).includes("ADMIN_TOKEN") ? digests.get("ADMIN_TOKEN") : undefined,
      ledger_sha256: (needs.checks ?? []).includes("LEDGER_TOKEN") ? digests.get("LEDGER_TOKEN") : undefined,
      query_sha256: (needs.checks ?? []).includes("QUERY_TOKEN") ? digests.get("QUERY_TOKEN") : undefined,
      ledger_token: presented.LEDGER_TOKEN,
      query_token: presented.QUERY_TOKEN,
      token_secret,
      token_ttl_s: config.AUTH_TOKEN_TTL_S,
    },
    warnings,
  };
}

/** At start: the checked secrets, with a warning logged for each development value used; or exit 1. */
export function secretsOrExit(
  service: string,
  config: AuthEnv,
  needs: CredentialNeeds,
  logger: { warn(message: string): void },
): AuthSecrets {
  try {
    const { secrets, warnings } = resolveSecrets(config, needs);
    for (const warning of warnings) logger.warn(warning);
    return secrets;
  } catch (error) {
    // The message names each problem; a stack trace would only bury it.
    console.error(`${service}: ${(error as Error).message}`);
    process.exit(1);
  }
}

/** Verified tokens remembered per process (about 200 bytes each). */
const VERIFIED_CACHE_MAX = 50_000;

const digest = (text: string): Buffer => createHash("sha256").update(text).digest();
const fromHex = (hex: string | undefined): Buffer | null => (hex ? Buffer.from(hex, "hex") : null);

/** Equal-length digests, so the comparison takes the same time whatever the input. */
function sameSecret(given: Buffer, expected: Buffer | null): boolean {
  return expected !== null && timingSafeEqual(given, expected);
}

const userIdClaim = /^[1-9][0-9]{0,15}$/;
const BEARER = /^Bearer +([\x21-\x7e]{1,4096})$/i;

export const unauthorized = (message: string, error: "invalid_request" | "invalid_token" | null) =>
  new ApiError(401, "unauthorized", message, {
    headers: { "www-authenticate": error === null ? "Bearer" : `Bearer error="${error}"` },
  });

export const forbidden = (message: string) => new ApiError(403, "forbidden", message);

const principals = new WeakMap<FastifyRequest, Principal>();

export interface IssuedToken {
  access_token: string;
  token_type: "Bearer";
  expires_in: number;
}

/**
 * Each user's current token version: a token whose `ver` claim is below it was revoked (by a
 * password change or a lock). user-service reads its database; transaction-service reads the
 * copy user-service keeps in Redis.
 */
export interface TokenVersions {
  current(user_id: number): Promise<number>;
}

export class Authenticator {
  readonly #credentials: Buffer[] = [];
  readonly #kinds: Array<"admin" | "ledger" | "query"> = [];
  /**
   * The token key, imported into WebCrypto once: given as bytes, jose imports it again at every
   * sign and verify (a token not seen before: 64-74 → 50-55 µs of CPU to authenticate, 5,000
   * tokens 64 at a time; with 100,000 wallets nearly every payer's token is one).
   */
  readonly #key: Promise<webcrypto.CryptoKey> | null;
  readonly #ttl_s: number;
  readonly #versions: TokenVersions | null;
  /** Verified user tokens by their SHA-256, with their version and expiry. */
  readonly #verified = new BoundedMap<string, { user_id: number; version: number; expires_at_ms: number }>(
    VERIFIED_CACHE_MAX,
  );

  constructor(secrets: AuthSecrets, versions: TokenVersions | null = null) {
    for (const [kind, hex] of [
      ["admin", secrets.admin_sha256],
      ["ledger", secrets.ledger_sha256],
      ["query", secrets.query_sha256],
    ] as const) {
      const expected = fromHex(hex);
      if (expected === null) continue;
      this.#credentials.push(expected);
      this.#kinds.push(kind);
    }
    this.#key = secrets.token_secret
      ? webcrypto.subtle.importKey(
          "raw",
          new TextEncoder().encode(secrets.token_secret),
          { name: "HMAC", hash: "SHA-256" },
          false,
          ["sign", "verify"],
        )
      : null;
    this.#ttl_s = secrets.token_ttl_s ?? 900;
    this.#versions = versions;
  }

  /** A signed access token for a user who just proved who they are, at their current token version. */
  async issueUserToken(
    user_id: number,
    token_version = 0,
    now_s: number = Math.floor(Date.now() / 1000),
  ): Promise<IssuedToken> {
    assert(this.#key !== null, "this service has no AUTH_TOKEN_SECRET to sign with");
    assert(Number.isSafeInteger(user_id), `user id ${user_id} must be a safe integer`);
    assert(user_id > 0, `user id ${user_id} must be positive`);
    assert(Number.isSafeInteger(token_version), `token version ${token_version} must be a safe integer`);
    assert(token_version >= 0, `token version ${token_version} must not be negative`);
    const access_token = await new SignJWT({ ver: token_version })
      .setProtectedHeader({ alg: "HS256", typ: TOKEN_TYPE })
      .setIssuer(TOKEN_ISSUER)
      .setAudience(TOKEN_AUDIENCE)
      .setSubject(String(user_id))
      .setIssuedAt(now_s)
      .setExpirationTime(now_s + this.#ttl_s)
      .sign(await this.#key);
    return { access_token, token_type: "Bearer", expires_in: this.#ttl_s };
  }

  /**
   * The caller behind an Authorization header: null when there is none, a principal for a
   * valid credential, and a 401 for anything else (wrong scheme, unknown token, bad signature,
   * expired, revoked, wrong issuer/audience/type).
   */
  async authenticate(
    header: string | undefined,
    alongside?: (principal: Principal) => Promise<void>,
  ): Promise<Principal | null> {
    if (header === undefined || header === "") return null;
    const match = BEARER.exec(header);
    if (match?.[1] === undefined) {
      throw unauthorized("the Authorization header must be 'Bearer <token>'", "invalid_request");
    }
    const token = match[1];
    const given = digest(token);
    // Every comparison always runs: which one matched does not show in the timing.
    let matched: "admin" | "ledger" | "query" | null = null;
    for (const [index, expected] of this.#credentials.entries()) {
      if (sameSecret(given, expected)) matched = this.#kinds[index] ?? null;
    }
    if (matched !== null) {
      const principal = { kind: matched };
      await alongside?.(principal);
      return principal;
    }
    if (this.#key === null) throw unauthorized("invalid token", "invalid_token");
    const user = await this.#verifyUserToken(token, given.toString("base64"));
    const principal: Principal = { kind: "user", user_id: user.user_id };
    // Side by side: both may be a Redis round trip, and together they share one. A revoked token
    // is refused (401) before anything `alongside` threw.
    const [revoked, beside] = await Promise.allSettled([this.#revoked(user), alongside?.(principal)]);
    if (revoked.status === "rejected") throw revoked.reason;
    if (revoked.value) {
      throw unauthorized("token revoked (password changed or account locked); log in again", "invalid_token");
    }
    if (beside.status === "rejected") throw beside.reason;
    return principal;
  }

  /** Checked on every request, the cached tokens included: a revocation takes effect at once. */
  async #revoked(user: { user_id: number; version: number }): Promise<boolean> {
    return this.#versions !== null && user.version < (await this.#versions.current(user.user_id));
  }

  async #verifyUserToken(token: string, cache_key: string): Promise<{ user_id: number; version: number }> {
    // A token verified before is trusted until it expires: its signature cannot have changed.
    // (The HMAC check through WebCrypto was the largest single cost of a request in the benchmark.)
    const known = this.#verified.get(cache_key);
    if (known !== undefined) {
      if (Date.now() < known.expires_at_ms) return known;
      this.#verified.delete(cache_key);
    }
    if (this.#key === null) throw unauthorized("invalid token", "invalid_token");
    try {
      const { payload } = await jwtVerify(token, await this.#key, {
        algorithms: ["HS256"],
        issuer: TOKEN_ISSUER,
        audience: TOKEN_AUDIENCE,
        typ: TOKEN_TYPE,
        requiredClaims: ["sub", "iat", "exp", "ver"],
        clockTolerance: 5,
      });
      const sub = payload.sub ?? "";
      const version = payload.ver;
      if (
        !userIdClaim.test(sub) ||
        !Number.isSafeInteger(Number(sub)) ||
        typeof version !== "number" ||
        !Number.isSafeInteger(version) ||
        version < 0
      ) {
        throw unauthorized("invalid token", "invalid_token");
      }
      const user_id = Number(sub);
      const entry = { user_id, version, expires_at_ms: (payload.exp as number) * 1000 };
      this.#verified.set(cache_key, entry);
      return entry;
    } catch (error) {
      if (error instanceof ApiError) throw error;
      if (error instanceof joseErrors.JWTExpired) throw unauthorized("token expired", "invalid_token");
      if (error instanceof joseErrors.JOSEError) throw unauthorized("invalid token", "invalid_token");
      throw error;
    }
  }

  /**
   * onRequest hook: the caller must be one of `kinds` (401 without a credential or with a bad
   * one, 403 with a valid credential of another kind). The principal is then `principalOf(request)`.
   */
  guard(...kinds: PrincipalKind[]) {
    assert(kinds.length > 0, "a guard accepts at least one kind of caller");
    return (request: FastifyRequest): Promise<void> => this.#admit(request, kinds);
  }

  /**
   * As guard(), with `alongside` run for an admitted caller while their token's revocation is
   * checked (a rate limit: see RateLimiter.guard). A caller of another kind gets its 403 and
   * `alongside` never runs for them.
   */
  guardWith(
    kinds: PrincipalKind[],
    alongside: (principal: Principal, reply: FastifyReply) => Promise<void>,
  ): (request: FastifyRequest, reply: FastifyReply) => Promise<void> {
    assert(kinds.length > 0, "a guard accepts at least one kind of caller");
    return (request, reply) => this.#admit(request, kinds, (principal) => alongside(principal, reply));
  }

  /** The caller must be one of `kinds` (401, else 403); `alongside` runs only for an admitted one. */
  async #admit(
    request: FastifyRequest,
    kinds: PrincipalKind[],
    alongside?: (principal: Principal) => Promise<void>,
  ): Promise<void> {
    const admitted =
      alongside === undefined
        ? undefined
        : (principal: Principal) =>
            kinds.includes(principal.kind) ? alongside(principal) : Promise.resolve();
    const principal = await this.authenticate(request.headers.authorization, admitted);
    if (principal === null) throw unauthorized("authentication required", null);
    if (!kinds.includes(principal.kind)) throw forbidden(refusalFor(principal.kind, kinds));
    principals.set(request, principal);
  }

  /** onRequest hook for public routes that behave differently for some callers (401 only for a bad credential). */
  optional() {
    return async (request: FastifyRequest): Promise<void> => {
      const principal = await this.authenticate(request.headers.authorization);
      if (principal !== null) principals.set(request, principal);
    };
  }
}

const credentialNames: Record<PrincipalKind, string> = {
  user: "a user's access token",
  admin: "the operator credential",
  ledger: "the ledger credential",
  query: "the query credential",
};

function refusalFor(kind: PrincipalKind, accepted: PrincipalKind[]): string {
  return `${credentialNames[kind]} is not accepted here; this route needs ${accepted.map((k) => credentialNames[k]).join(" or ")}`;
}

/** The caller a guard (or optional()) authenticated; null for an anonymous caller of a public route. */
export function principalOf(request: FastifyRequest): Principal | null {
  return principals.get(request) ?? null;
}

/** The caller a guard authenticated; a bug if there is none. */
export function requirePrincipal(request: FastifyRequest): Principal {
  const principal = principals.get(request);
  assert(principal !== undefined, "route has no authentication guard");
  return principal;
}

/** Users act only on their own wallet; the operator on any. */
export function requireSelfOrAdmin(principal: Principal, user_id: number, what: string): void {
  if (principal.kind === "admin") return;
  if (principal.kind === "user" && principal.user_id === user_id) return;
  throw forbidden(`${what} belongs to another user`);
}

/** The OpenAPI security requirement matching a guard, for the route's schema. */
export function securityFor(...kinds: PrincipalKind[]): Array<Record<string, string[]>> {
  return kinds.map((kind) => ({ [securitySchemeNames[kind]]: [] }));
}

export const securitySchemeNames: Readonly<Record<PrincipalKind, string>> = {
  user: "userToken",
  admin: "adminToken",
  ledger: "ledgerToken",
  query: "queryToken",
};

/** OpenAPI components.securitySchemes: four bearer credentials on the same header. */
export const securitySchemes = {
  userToken: {
    type: "http",
    scheme: "bearer",
    bearerFormat: "JWT",
    description: "A user's access token from user-service `POST /auth/login` (short-lived, HS256).",
  },
  adminToken: {
    type: "http",
    scheme: "bearer",
    description: "The operator credential (ADMIN_TOKEN).",
  },
  ledgerToken: {
    type: "http",
    scheme: "bearer",
    description: "transaction-service's credential for the ledger's saga steps (LEDGER_TOKEN).",
  },
  queryToken: {
    type: "http",
    scheme: "bearer",
    description: "transaction-service's credential for the read side (QUERY_TOKEN).",
  },
} as const;

/** The access token answer of `POST /auth/login`. */
export const issuedTokenSchema = z.object({
  access_token: z.string(),
  token_type: z.literal("Bearer"),
  expires_in: z.number().int().positive(),
});
