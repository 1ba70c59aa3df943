/**
 * OpenAPI 3 for every service, generated from the zod schemas that validate the requests and
 * serialize the responses (fastify-type-provider-zod's transforms), served as JSON at
 * `/openapi.json` and as a browsable Swagger UI at `/docs` (assets from the package, no CDN).
 *
 * Register it before the routes: it collects them as they are added.
 */
import swagger from "@fastify/swagger";
import swaggerUi from "@fastify/swagger-ui";
import { jsonSchemaTransform, jsonSchemaTransformObject } from "fastify-type-provider-zod";
import { z } from "zod";
import { assert } from "#packages/runtime/assert.ts";
import { securitySchemes } from "./auth.ts";
import type { HttpServer } from "./server.ts";

export interface OpenApiOptions {
  service: string;
  description: string;
  version?: string;
}

export async function registerOpenApi(app: HttpServer, options: OpenApiOptions): Promise<void> {
  await app.register(swagger, {
    openapi: {
      openapi: "3.0.3",
      info: {
        title: options.service,
        description: options.description,
        version: options.version ?? "0.1.0",
      },
      components: { securitySchemes },
    },
    transform: jsonSchemaTransform,
    transformObject: jsonSchemaTransformObject,
  });
  await app.register(swaggerUi, {
    routePrefix: "/docs",
    staticCSP: true,
    uiConfig: { deepLinking: true, persistAuthorization: false },
  });
  app.get("/openapi.json", { schema: { hide: true } }, async () => app.swagger());
}

// ---------------------------------------------------------------------------------------------
// Response shapes every service shares.

/** The error envelope (design section 7): `{success: false, message, code, details?}`. */
export const errorEnvelopeSchema = z.object({
  success: z.literal(false),
  message: z.string(),
  code: z.string(),
  details: z.record(z.string(), z.unknown()).optional(),
});

/** `{success: true, data}` around a route's payload. */
export function envelope<T extends z.ZodType>(data: T) {
  return z.object({ success: z.literal(true), data });
}

const errorDescriptions: Record<number, string> = {
  400: "Invalid request: malformed JSON, or a path, query, header or body field that breaks the schema (`message` names it)",
  401: "No credential, or a malformed, unknown or expired one (see WWW-Authenticate)",
  403: "A valid credential that may not do this (another user's wallet, or the wrong kind of credential)",
  404: "Not found",
  409: "Conflict with the current state (see `code`)",
  413: "Request body larger than the limit",
  415: "Request body is not application/json",
  422: "Well-formed but refused by a business rule (see `code`)",
  429: "Too many requests for this user; retry after the Retry-After header's seconds",
  500: "Internal error (a bug; nothing internal is disclosed)",
  503: "Temporarily unavailable (an engine is down, or the service is shutting down); retry later",
};

/** Statuses any route may answer: an engine outage, or a bug. */
const ALWAYS = [500, 503] as const;

/** Statuses of a route that reads a JSON body, on top of its own. */
export const BODY_ERRORS = [400, 413, 415] as const;

/**
 * The documented error responses of a route, each the error envelope with a description; 500
 * and 503 are always included. Pass a description to say what a status means for this route.
 */
export function errorResponses(
  ...statuses: Array<number | readonly number[] | Record<number, string>>
): Record<number, z.ZodType> {
  const responses: Record<number, z.ZodType> = {};
  const add = (status: number, description?: string) => {
    const text = description ?? errorDescriptions[status];
    assert(text !== undefined, `no description for status ${status}`);
    responses[status] = errorEnvelopeSchema.describe(text);
  };
  for (const entry of statuses) {
    if (typeof entry === "number") add(entry);
    else if (Array.isArray(entry)) for (const status of entry as readonly number[]) add(status);
    else for (const [status, description] of Object.entries(entry)) add(Number(status), description);
  }
  for (const status of ALWAYS) if (responses[status] === undefined) add(status);
  return responses;
}
