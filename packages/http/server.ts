/**
 * The HTTP plumbing every service shares: Fastify with zod schemas for validation (the same
 * schemas describe the API), the error envelope, body limits, request timeouts and a health
 * route that reports each engine the service depends on.
 */
import Fastify, {
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  LogController,
} from "fastify";
import {
  hasZodFastifySchemaValidationErrors,
  serializerCompiler,
  validatorCompiler,
  type ZodTypeProvider,
} from "fastify-type-provider-zod";
import { z } from "zod";
import type { Logger } from "#packages/log/index.ts";
import { isTransientPgError } from "#packages/pg/index.ts";
import { isMongoUnavailable } from "#packages/records/index.ts";
import { assert } from "#packages/runtime/assert.ts";
import { withTimeout } from "#packages/runtime/index.ts";
import { type Authenticator, principalOf } from "./auth.ts";
import { UpstreamError } from "./client.ts";
import { ApiError, errorBody } from "./errors.ts";
import { errorEnvelopeSchema } from "./openapi.ts";

export interface HttpServerOptions {
  logger: Logger;
  body_limit_bytes?: number;
  request_timeout_ms?: number;
}

export type HttpServer = FastifyInstance<
  import("node:http").Server,
  import("node:http").IncomingMessage,
  import("node:http").ServerResponse,
  Logger,
  ZodTypeProvider
>;

export function createHttpServer(options: HttpServerOptions): HttpServer {
  const bodyLimit = options.body_limit_bytes ?? 64 * 1024;
  const app = Fastify({
    loggerInstance: options.logger,
    bodyLimit,
    requestTimeout: options.request_timeout_ms ?? 30_000,
    connectionTimeout: 60_000,
    keepAliveTimeout: 65_000,
    // Per-request access logs would dominate the output at payment rates; errors are still logged.
    logController: new LogController({ disableRequestLogging: true }),
    // Fastify's own 503 while closing has a body of its own; the hook below answers in the envelope.
    return503OnClosing: false,
  }).withTypeProvider<ZodTypeProvider>();

  refuseWhileClosing(app);

  // Every answer: browsers must not guess another media type than the one declared (a JSON
  // error echoing input must never run as HTML or script).
  app.addHook("onSend", async (_request, reply) => {
    reply.header("x-content-type-options", "nosniff");
  });

  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  // Every body is JSON: without this, a text/plain body would be parsed as a string and answered
  // 400 by the schema; it is the wrong media type, 415.
  app.removeContentTypeParser("text/plain");

  const noRoute = indexRoutes(app);

  app.setErrorHandler((error: FastifyError, request, reply) => {
    // A body that cannot be parsed for a route that does not exist: the route is the problem.
    if (request.is404) return noRoute(request, reply);
    if (error instanceof ApiError) {
      if (error.headers) reply.headers(error.headers);
      return reply.status(error.status).send(errorBody(error.code, error.message, error.details));
    }
    if (hasZodFastifySchemaValidationErrors(error)) {
      const problems = error.validation.map((issue) => {
        const where = [error.validationContext, issue.instancePath.replace(/^\//, "").replaceAll("/", ".")]
          .filter((part) => part !== undefined && part !== "")
          .join(".");
        return `${where}: ${issue.message}`;
      });
      return reply
        .status(400)
        .send(errorBody("invalid_request", problems.join("; "), { problems: error.validation.length }));
    }
    const status = error.statusCode ?? 500;
    if (status >= 400 && status < 500) {
      // Fastify's own client errors: malformed JSON, body too large, wrong content type...
      const code =
        status === 413 ? "body_too_large" : status === 415 ? "unsupported_media_type" : "invalid_request";
      if (status === 413) drainRefusedBody(request.raw, reply);
      const message =
        status === 413
          ? `the request body is larger than the limit of ${bodyLimit} bytes`
          : status === 415
            ? "the request body must be JSON (Content-Type: application/json)"
            : error.message;
      return reply.status(status).send(errorBody(code, message));
    }
    if (isEngineUnavailable(error)) {
      request.log.warn({ err: error }, "engine unavailable");
      reply.header("retry-after", "1");
      return reply
        .status(503)
        .send(errorBody("engine_unavailable", "a storage engine is temporarily unavailable; retry later"));
    }
    request.log.error({ err: error }, "unhandled error");
    return reply.status(500).send(errorBody("internal_error", "internal error"));
  });

  app.setNotFoundHandler((request, reply) => noRoute(request, reply));

  return app;
}

function refuseWhileClosing(app: HttpServer): void {
  // A shutting-down instance refuses new requests (on kept-alive connections) with 503, so the
  // client retries on another instance, while the running ones finish.
  let closing = false;
  app.addHook("preClose", async () => {
    closing = true;
  });
  app.addHook("onRequest", async (_request, reply) => {
    if (!closing) return;
    reply.header("connection", "close");
    throw new ApiError(503, "shutting_down", "this instance is shutting down; retry", {
      headers: { "retry-after": "1" },
    });
  });
}

/** Records each route's methods as it is added; answers a request no route took. */
function indexRoutes(app: HttpServer): (request: FastifyRequest, reply: FastifyReply) => FastifyReply {
  // Which methods each path answers, so a known path with another method gets 405 and an Allow
  // header (RFC 9110) instead of 404.
  const paths = new Map<string, { pattern: RegExp; methods: Set<string> }>();
  app.addHook("onRoute", (route) => {
    if ((route.config as { refusal?: boolean } | undefined)?.refusal === true) return;
    let entry = paths.get(route.url);
    if (entry === undefined) {
      const pattern = route.url
        .split(/(:[A-Za-z0-9_]+|\*)/)
        .map((part) =>
          part === "*" ? ".*" : part.startsWith(":") ? "[^/]+" : part.replace(/[.+?^${}()|[\]\\]/g, "\\$&"),
        )
        .join("");
      entry = { pattern: new RegExp(`^${pattern}$`), methods: new Set() };
      paths.set(route.url, entry);
    }
    for (const method of [route.method].flat()) entry.methods.add(method);
  });

  /** No route for this method and path: 405 with Allow when the path exists, 404 otherwise. */
  return (request: FastifyRequest, reply: FastifyReply) => {
    const path = request.url.split("?")[0] ?? "";
    // The router prefers static segments to parameters: so does this (/transactions/transfer is
    // not /transactions/:id).
    const matches = [...paths.entries()].filter(([, { pattern }]) => pattern.test(path));
    const fewest = Math.min(...matches.map(([url]) => (url.match(/:|\*/g) ?? []).length));
    const allowed = new Set<string>();
    for (const [url, { methods }] of matches) {
      if ((url.match(/:|\*/g) ?? []).length === fewest) for (const method of methods) allowed.add(method);
    }
    if (allowed.size > 0) {
      return reply
        .status(405)
        .header("allow", [...allowed].sort().join(", "))
        .send(errorBody("method_not_allowed", `${request.method} is not allowed on ${path}`));
    }
    return reply.status(404).send(errorBody("route_not_found", `no route ${request.method} ${path}`));
  };
}

/**
 * A static path that a parameterised route would capture for `method` (GET /transactions/transfer
 * would be GET /transactions/:id): answer 405 with its real methods instead of a confusing 400.
 */
export function refuseMethod(
  app: HttpServer,
  method: "GET" | "DELETE" | "PUT",
  url: string,
  allow: string[],
): void {
  app.route({
    method,
    url,
    config: { refusal: true },
    schema: { hide: true },
    handler: async () => {
      throw new ApiError(405, "method_not_allowed", `${method} is not allowed on ${url}`, {
        headers: { allow: allow.join(", ") },
      });
    },
  });
}

/**
 * An engine that did not answer (PostgreSQL restarting, MongoDB unreachable, a service call that
 * timed out): the request may succeed on retry, so 503 with Retry-After rather than 500.
 */
export function isEngineUnavailable(error: unknown): boolean {
  if (error instanceof UpstreamError) return true;
  return isTransientPgError(error) || isMongoUnavailable(error);
}

export type HealthChecks = Record<string, () => Promise<unknown>>;

export interface HealthOptions {
  timeout_ms?: number;
  /**
   * On the public listener: anonymous callers learn only up or down (`{status}` and the status
   * code), never which engine failed or its error text; the operator's credential (checked by
   * this authenticator) sees the details. Without it (the internal listener) details are served
   * to every caller, since only this host reaches that listener.
   */
  auth?: Authenticator;
  /**
   * The checks a copy needs to serve its own requests (`GET /health/ready`): a load balancer or a
   * readiness probe takes a copy out only when these fail. Engines every copy shares and uses
   * asynchronously (Kafka behind the outbox) stay out: a slow broker would otherwise take every
   * copy out at once, and requests that need no broker would find no copy. All checks by default.
   */
  ready?: readonly string[];
}

/**
 * GET /health answers 200 when every engine answers within its timeout, 503 otherwise; the
 * detailed form has a line per engine so an operator sees which one is down. GET /health/ready
 * answers the same way for the checks in `options.ready` alone, with `{status}` only.
 */
export function registerHealth(
  app: HttpServer,
  service: string,
  checks: HealthChecks,
  options: HealthOptions = {},
): void {
  const timeout_ms = options.timeout_ms ?? 2_000;
  const engineSchema = z.object({ ok: z.boolean(), error: z.string().optional() });
  const detailedSchema = z.object({
    success: z.boolean(),
    data: z.object({
      service: z.string(),
      healthy: z.boolean(),
      engines: z.record(z.string(), engineSchema),
    }),
  });
  const summarySchema = z.object({ status: z.enum(["up", "down"]) });
  const publicSide = options.auth !== undefined;
  const bodySchema = publicSide ? z.union([summarySchema, detailedSchema]) : detailedSchema;
  const schema = {
    summary: publicSide
      ? "Whether this service is up (`{status}`); the operator's credential also gets each engine's state"
      : "Whether this service's engines answer, engine by engine",
    tags: ["health"],
    response: {
      200: bodySchema.describe("Every engine answered"),
      503: bodySchema.describe("At least one engine did not answer"),
      ...(publicSide
        ? { 401: errorEnvelopeSchema.describe("A malformed, unknown or expired credential") }
        : {}),
    },
  };
  const onRequest = options.auth?.optional();
  app.get("/health", { schema, ...(onRequest ? { onRequest } : {}) }, async (request, reply) => {
    const results = await runChecks(checks, timeout_ms);
    const healthy = Object.values(results).every((r) => r.ok);
    reply.status(healthy ? 200 : 503);
    if (publicSide && principalOf(request)?.kind !== "admin") {
      return reply.send({ status: healthy ? "up" : "down" });
    }
    return reply.send({ success: healthy, data: { service, healthy, engines: results } });
  });
  const readyChecks = Object.fromEntries(
    Object.entries(checks).filter(([name]) => options.ready === undefined || options.ready.includes(name)),
  );
  for (const name of options.ready ?? []) assert(name in checks, `readiness names unknown check ${name}`);
  const readySchema = {
    summary:
      "Whether this copy can serve its requests (the engines it needs for them answer): for load balancers",
    tags: ["health"],
    response: {
      200: summarySchema.describe("Ready"),
      503: summarySchema.describe("An engine this copy needs did not answer"),
    },
  };
  app.get("/health/ready", { schema: readySchema }, async (_request, reply) => {
    const results = await runChecks(readyChecks, timeout_ms);
    const ready = Object.values(results).every((r) => r.ok);
    return reply.status(ready ? 200 : 503).send({ status: ready ? "up" : "down" });
  });
}

async function runChecks(
  checks: HealthChecks,
  timeout_ms: number,
): Promise<Record<string, { ok: boolean; error?: string }>> {
  const results: Record<string, { ok: boolean; error?: string }> = {};
  await Promise.all(
    Object.entries(checks).map(async ([name, check]) => {
      try {
        await withTimeout(check(), timeout_ms, `${name} health check`);
        results[name] = { ok: true };
      } catch (error) {
        results[name] = { ok: false, error: (error as Error).message };
      }
    }),
  );
  return results;
}

/**
 * A service's two listeners: the public one (its API) and the internal one (ledger steps, audit,
 * /ops/*, later metrics), which binds to INTERNAL_HOST (loopback by default) on its own port. An
 * internal route is registered on the internal app only, so the public listener answers 404.
 */
export interface Listeners {
  public: HttpServer;
  internal: HttpServer;
}

export function createListeners(options: HttpServerOptions): Listeners {
  return { public: createHttpServer(options), internal: createHttpServer(options) };
}

export async function listenBoth(
  listeners: Listeners,
  where: { host: string; port: number; internal_host: string; internal_port: number },
): Promise<void> {
  await listeners.internal.listen({ host: where.internal_host, port: where.internal_port });
  await listeners.public.listen({ host: where.host, port: where.port });
}

/** Both listeners stop taking requests and finish the running ones. */
export async function closeBoth(listeners: Listeners): Promise<void> {
  await Promise.all([listeners.public.close(), listeners.internal.close()]);
}

/** The largest refused body read (and dropped) so that its sender can read the 413 (see below). */
const REFUSED_BODY_DRAIN_MAX_BYTES = 16 * 1024 * 1024;

/**
 * Fastify refuses a body over the limit before reading it and closes the connection after the
 * answer; a sender still writing the body then meets a closed socket (EPIPE) instead of the 413
 * (about one 2 MB request in 75 on loopback). So the connection stays open for a body of
 * announced size up to REFUSED_BODY_DRAIN_MAX_BYTES: Node reads and drops the rest of it, and the
 * sender reads the answer. A larger one is not worth reading: its connection closes as before.
 */
function drainRefusedBody(
  raw: import("node:http").IncomingMessage,
  reply: { removeHeader(key: string): unknown },
): void {
  const announced = Number(raw.headers["content-length"]);
  if (Number.isFinite(announced) && announced <= REFUSED_BODY_DRAIN_MAX_BYTES)
    reply.removeHeader("connection");
}
