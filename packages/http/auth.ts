/**
 * Who is calling, for every service, in one place.
 *
 * Three credentials travel as `Authorization: Bearer <value>`:
 * - a user's access token: a JWT (HS256, key AUTH_TOKEN_SECRET) that user-service issues on
 *   `POST /auth/login`, short-lived (AUTH_TOKEN_TTL_S), whose subject is the user id;
 * - the operator credential ADMIN_TOKEN (opening balances, deposits, listing users, reading any
 *   record, ops routes);
 * - the service credential SERVICE_TOKEN, which services present to each other's internal routes.
 *
 * Routes declare which kinds of caller they accept with `guard(...)` (an onRequest hook, so an
 * unauthenticated caller is answered 401 before its body is even read), and handlers narrow
 * further (a user may act only on their own wallet) with `requireSelfOrAdmin`. A credential
 * that is present but malformed, unknown or expired is always 401, even on a public route; a
 * valid credential of the wrong kind, or a user acting on another user's wallet, is 403.
 *
 * Secrets are required at start. ALLOW_INSECURE_DEV=true replaces missing ones by fixed,
 * publicly known development values (never an "open" mode: the same checks run either way).
 */
import { createHash, timingSafeEqual } from "node:crypto";
import type { FastifyRequest } from "fastify";
import { errors as joseErrors, jwtVerify, SignJWT } from "jose";
import { z } from "zod";
import { ApiError } from "./errors.ts";

export type Principal = { kind: "admin" } | { kind: "service" } | { kind: "user"; user_id: number };
export type PrincipalKind = Principal["kind"];

export const TOKEN_ISSUER = "dps:user-service";
export const TOKEN_AUDIENCE = "dps";
/** RFC 9068's media type for JWT access tokens: a token minted for another purpose is refused. */
export const TOKEN_TYPE = "at+jwt";

export type SecretName = "ADMIN_TOKEN" | "SERVICE_TOKEN" | "AUTH_TOKEN_SECRET";

/** Fixed values used only with ALLOW_INSECURE_DEV=true. Public by definition: never secure. */
export const INSECURE_DEV_SECRETS: Readonly<Record<SecretName, string>> = {
  ADMIN_TOKEN: "insecure-dev-admin-token-not-a-secret",
  SERVICE_TOKEN: "insecure-dev-service-token-not-a-secret",
  AUTH_TOKEN_SECRET: "insecure-dev-auth-token-secret-not-a-secret",
};

const MIN_LENGTH: Readonly<Record<SecretName, number>> = {
  ADMIN_TOKEN: 16,
  SERVICE_TOKEN: 16,
  // HS256 wants a key of at least 256 bits; 32 characters of base64url carry 192 random bits
  // (what `npm start` generates), the length is a floor against typed-in short keys.
  AUTH_TOKEN_SECRET: 32,
};

export interface AuthEnv {
  ADMIN_TOKEN: string;
  SERVICE_TOKEN: string;
  AUTH_TOKEN_SECRET: string;
  AUTH_TOKEN_TTL_S: number;
  ALLOW_INSECURE_DEV: boolean;
}

export interface AuthSecrets {
  admin_token?: string | undefined;
  service_token?: string | undefined;
  token_secret?: string | undefined;
  token_ttl_s?: number | undefined;
}

/**
 * The secrets a service needs, checked: each present (or, with ALLOW_INSECURE_DEV, its fixed
 * development value), long enough, printable, and the operator and service credentials distinct
 * (so one can never pass for the other). Throws with a message naming each problem.
 */
export function resolveSecrets(
  config: AuthEnv,
  needs: readonly SecretName[],
): { secrets: AuthSecrets; warnings: string[] } {
  const problems: string[] = [];
  const warnings: string[] = [];
  const value: Partial<Record<SecretName, string>> = {};
  for (const name of needs) {
    let given = config[name];
    if (given === "") {
      if (!config.ALLOW_INSECURE_DEV) {
        problems.push(
          `${name} is required (npm start generates one into .data/secrets.env; ALLOW_INSECURE_DEV=true uses a fixed, public development value)`,
        );
        continue;
      }
      given = INSECURE_DEV_SECRETS[name];
      warnings.push(
        `${name} is not set: using its fixed, PUBLIC development value (ALLOW_INSECURE_DEV=true)`,
      );
    }
    if (given.length < MIN_LENGTH[name])
      problems.push(`${name} must be at least ${MIN_LENGTH[name]} characters`);
    if (!/^[\x21-\x7e]+$/.test(given)) problems.push(`${name} must be printable ASCII without spaces`);
    value[name] = given;
  }
  if (value.ADMIN_TOKEN !== undefined && value.ADMIN_TOKEN === value.SERVICE_TOKEN) {
    problems.push("ADMIN_TOKEN and SERVICE_TOKEN must differ");
  }
  if (problems.length > 0) throw new Error(`invalid security configuration:\n  ${problems.join("\n  ")}`);
  return {
    secrets: {
      admin_token: value.ADMIN_TOKEN,
      service_token: value.SERVICE_TOKEN,
      token_secret: value.AUTH_TOKEN_SECRET,
      token_ttl_s: config.AUTH_TOKEN_TTL_S,
    },
    warnings,
  };
}

/** At start: the checked secrets, with a warning logged for each development value used; or exit 1. */
export function secretsOrExit(
  service: string,
  config: AuthEnv,
  needs: readonly SecretName[],
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

export class Authenticator {
  readonly #admin: Buffer | null;
  readonly #service: Buffer | null;
  readonly #key: Uint8Array | null;
  readonly #ttl_s: number;
  /** Verified user tokens by their SHA-256, with their expiry. */
  readonly #verified = new Map<string, { user_id: number; expires_at_ms: number }>();

  constructor(secrets: AuthSecrets) {
    this.#admin = secrets.admin_token ? digest(secrets.admin_token) : null;
    this.#service = secrets.service_token ? digest(secrets.service_token) : null;
    this.#key = secrets.token_secret ? new TextEncoder().encode(secrets.token_secret) : null;
    this.#ttl_s = secrets.token_ttl_s ?? 900;
  }

  /** A signed access token for a user who just proved who they are. */
  async issueUserToken(user_id: number, now_s: number = Math.floor(Date.now() / 1000)): Promise<IssuedToken> {
    if (this.#key === null) throw new Error("invariant: this service has no AUTH_TOKEN_SECRET to sign with");
    if (!Number.isSafeInteger(user_id) || user_id <= 0) throw new Error(`invariant: bad user id ${user_id}`);
    const access_token = await new SignJWT({})
      .setProtectedHeader({ alg: "HS256", typ: TOKEN_TYPE })
      .setIssuer(TOKEN_ISSUER)
      .setAudience(TOKEN_AUDIENCE)
      .setSubject(String(user_id))
      .setIssuedAt(now_s)
      .setExpirationTime(now_s + this.#ttl_s)
      .sign(this.#key);
    return { access_token, token_type: "Bearer", expires_in: this.#ttl_s };
  }

  /**
   * The caller behind an Authorization header: null when there is none, a principal for a
   * valid credential, and a 401 for anything else (wrong scheme, unknown token, bad signature,
   * expired, wrong issuer/audience/type).
   */
  async authenticate(header: string | undefined): Promise<Principal | null> {
    if (header === undefined || header === "") return null;
    const match = BEARER.exec(header);
    if (match?.[1] === undefined) {
      throw unauthorized("the Authorization header must be 'Bearer <token>'", "invalid_request");
    }
    const token = match[1];
    const given = digest(token);
    // Both comparisons always run: which one matched does not show in the timing.
    const isAdmin = sameSecret(given, this.#admin);
    const isService = sameSecret(given, this.#service);
    if (isAdmin) return { kind: "admin" };
    if (isService) return { kind: "service" };
    if (this.#key === null) throw unauthorized("invalid token", "invalid_token");
    // A token verified before is trusted until it expires: its signature cannot have changed.
    // (The HMAC check through WebCrypto was the largest single cost of a request in the benchmark.)
    const cache_key = given.toString("base64");
    const known = this.#verified.get(cache_key);
    if (known !== undefined) {
      if (Date.now() < known.expires_at_ms) return { kind: "user", user_id: known.user_id };
      this.#verified.delete(cache_key);
    }
    try {
      const { payload } = await jwtVerify(token, this.#key, {
        algorithms: ["HS256"],
        issuer: TOKEN_ISSUER,
        audience: TOKEN_AUDIENCE,
        typ: TOKEN_TYPE,
        requiredClaims: ["sub", "iat", "exp"],
        clockTolerance: 5,
      });
      const sub = payload.sub ?? "";
      if (!userIdClaim.test(sub) || !Number.isSafeInteger(Number(sub))) {
        throw unauthorized("invalid token", "invalid_token");
      }
      const user_id = Number(sub);
      if (this.#verified.size >= VERIFIED_CACHE_MAX) {
        // Oldest first (a Map keeps insertion order): a bounded cache, never a leak.
        const oldest = this.#verified.keys().next().value;
        if (oldest !== undefined) this.#verified.delete(oldest);
      }
      this.#verified.set(cache_key, { user_id, expires_at_ms: (payload.exp as number) * 1000 });
      return { kind: "user", user_id };
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
    if (kinds.length === 0) throw new Error("invariant: a guard accepts at least one kind of caller");
    return async (request: FastifyRequest): Promise<void> => {
      const principal = await this.authenticate(request.headers.authorization);
      if (principal === null) throw unauthorized("authentication required", null);
      if (!kinds.includes(principal.kind)) throw forbidden(refusalFor(principal.kind, kinds));
      principals.set(request, principal);
    };
  }

  /** onRequest hook for public routes that behave differently for some callers (401 only for a bad credential). */
  optional() {
    return async (request: FastifyRequest): Promise<void> => {
      const principal = await this.authenticate(request.headers.authorization);
      if (principal !== null) principals.set(request, principal);
    };
  }
}

function refusalFor(kind: PrincipalKind, accepted: PrincipalKind[]): string {
  const names: Record<PrincipalKind, string> = {
    user: "a user's access token",
    admin: "the operator credential",
    service: "the service credential",
  };
  return `${names[kind]} is not accepted here; this route needs ${accepted.map((k) => names[k]).join(" or ")}`;
}

/** The caller a guard (or optional()) authenticated; null for an anonymous caller of a public route. */
export function principalOf(request: FastifyRequest): Principal | null {
  return principals.get(request) ?? null;
}

/** The caller a guard authenticated; a bug if there is none. */
export function requirePrincipal(request: FastifyRequest): Principal {
  const principal = principals.get(request);
  if (principal === undefined) throw new Error("invariant: route has no authentication guard");
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
  service: "serviceToken",
};

/** OpenAPI components.securitySchemes: three bearer credentials on the same header. */
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
  serviceToken: {
    type: "http",
    scheme: "bearer",
    description: "The service-to-service credential (SERVICE_TOKEN).",
  },
} as const;

/** The access token answer of `POST /auth/login`. */
export const issuedTokenSchema = z.object({
  access_token: z.string(),
  token_type: z.literal("Bearer"),
  expires_in: z.number().int().positive(),
});
