/**
 * The HTTP plumbing every service shares: Fastify with zod schemas for validation (the same
 * schemas describe the API), the error envelope, body limits, request timeouts and a health
 * route that reports each engine the service depends on.
 */
import Fastify, { type FastifyError, type FastifyInstance, LogController } from "fastify";
import {
  hasZodFastifySchemaValidationErrors,
  serializerCompiler,
  validatorCompiler,
  type ZodTypeProvider,
} from "fastify-type-provider-zod";
import type { Logger } from "#packages/log/index.ts";
import { ApiError, errorBody } from "./errors.ts";

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
  const app = Fastify({
    loggerInstance: options.logger,
    bodyLimit: options.body_limit_bytes ?? 64 * 1024,
    requestTimeout: options.request_timeout_ms ?? 30_000,
    connectionTimeout: 60_000,
    keepAliveTimeout: 65_000,
    // Per-request access logs would dominate the output at payment rates; errors are still logged.
    logController: new LogController({ disableRequestLogging: true }),
    return503OnClosing: true,
  }).withTypeProvider<ZodTypeProvider>();

  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);

  app.setErrorHandler((error: FastifyError, request, reply) => {
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
      return reply.status(status).send(errorBody(code, error.message));
    }
    request.log.error({ err: error }, "unhandled error");
    return reply.status(500).send(errorBody("internal_error", "internal error"));
  });

  app.setNotFoundHandler((request, reply) =>
    reply
      .status(404)
      .send(errorBody("route_not_found", `no route ${request.method} ${request.url.split("?")[0]}`)),
  );

  return app;
}

export type HealthChecks = Record<string, () => Promise<unknown>>;

/**
 * GET /health answers 200 when every engine answers within its timeout, 503 otherwise, with a
 * line per engine so an operator sees which one is down.
 */
export function registerHealth(
  app: HttpServer,
  service: string,
  checks: HealthChecks,
  timeout_ms = 2_000,
): void {
  app.get("/health", async (_request, reply) => {
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
    const healthy = Object.values(results).every((r) => r.ok);
    return reply
      .status(healthy ? 200 : 503)
      .send({ success: healthy, data: { service, healthy, engines: results } });
  });
}

export async function withTimeout<T>(promise: Promise<T>, timeout_ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${timeout_ms} ms`)), timeout_ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
