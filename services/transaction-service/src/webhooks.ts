/**
 * Webhooks in transaction-service: the events a saga transition raises (enqueued by the
 * transition's own statement, see SagaStore), and the routes through which a user manages their
 * endpoints. Delivery, signing and the SSRF guard are packages/webhooks'.
 */
import type { FastifyReply, FastifyRequest } from "fastify";
import { z } from "zod";
import { listQuerySchema, paginationSchema } from "#packages/contracts/pagination.ts";
import { forbidden, type Principal, requirePrincipal, securityFor } from "#packages/http/auth.ts";
import { ok } from "#packages/http/errors.ts";
import { BODY_ERRORS, envelope, errorResponses } from "#packages/http/openapi.ts";
import type { HttpServer } from "#packages/http/server.ts";
import type { Pool } from "#packages/pg/index.ts";
import {
  createEndpoint,
  createEndpointBodySchema,
  deleteEndpoint,
  deliveryParamsSchema,
  deliveryViewSchema,
  endpointParamsSchema,
  endpointSchema,
  listDeliveries,
  listEndpoints,
  redeliver,
  rotateSecret,
} from "#packages/webhooks/index.ts";

function ownerOf(principal: Principal): number {
  if (principal.kind !== "user") throw forbidden("webhook endpoints belong to users: use a user's token");
  return principal.user_id;
}

const secretAnswer = z.object({
  secret: z.string().describe("The signing secret (`whsec_<base64>`), shown only in this answer"),
});

type WebhookRouteDeps = {
  pool: Pool;
  /** Authentication (a user's token) and the rate limit. */
  onRequest: Array<(request: FastifyRequest, reply: FastifyReply) => Promise<void>>;
  allow_private: boolean;
  secret_grace_ms: number;
  /** A redelivery was asked for: the dispatcher looks now. */
  wake: () => void;
};

export function registerWebhookRoutes(app: HttpServer, deps: WebhookRouteDeps): void {
  registerEndpointRoutes(app, deps);
  registerDeliveryRoutes(app, deps);
}

/** What every webhook route shares: its hooks, its OpenAPI tags and security, its error answers. */
function routeParts(deps: WebhookRouteDeps) {
  const common = { onRequest: deps.onRequest };
  const meta = { tags: ["webhooks"], security: securityFor("user") };
  const errors = (notFound?: string) =>
    errorResponses(
      400,
      401,
      429,
      notFound === undefined ? { 403: "Not a user's token" } : { 403: "Not a user's token", 404: notFound },
    );
  return { common, meta, errors };
}

/** Registering, listing, deleting an endpoint and rotating its secret. */
function registerEndpointRoutes(app: HttpServer, deps: WebhookRouteDeps): void {
  const { common, meta, errors } = routeParts(deps);

  app.post(
    "/webhooks",
    {
      ...common,
      schema: {
        ...meta,
        summary: "Register a webhook endpoint for the caller's transfers (the answer shows its secret once)",
        description:
          "Events: `transfer.completed` and `transfer.failed` (to payer and payee), `disbursement.completed` (to the payer). " +
          "Deliveries are signed as Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`), " +
          "and carry a W3C `traceparent` header (not signed) in the trace of the request that created the transfer or batch.",
        body: createEndpointBodySchema,
        response: {
          201: envelope(secretAnswer.extend({ endpoint: endpointSchema })).describe(
            "The endpoint and its secret",
          ),
          ...errorResponses(BODY_ERRORS, 401, 429, {
            403: "Not a user's token",
            409: "The caller has the most endpoints allowed",
            422: "The URL is refused: not http(s), or a loopback, private or link-local address (`webhook_url_refused`)",
          }),
        },
      },
    },
    async (request, reply) => {
      const owner = ownerOf(requirePrincipal(request));
      const created = await createEndpoint(deps.pool, owner, request.body, {
        allow_private: deps.allow_private,
      });
      return reply.status(201).send(ok(created));
    },
  );

  app.get(
    "/webhooks",
    {
      ...common,
      schema: {
        ...meta,
        summary: "The caller's webhook endpoints (never their secrets)",
        response: { 200: envelope(z.object({ endpoints: z.array(endpointSchema) })), ...errors() },
      },
    },
    async (request) => ok({ endpoints: await listEndpoints(deps.pool, ownerOf(requirePrincipal(request))) }),
  );

  app.delete(
    "/webhooks/:id",
    {
      ...common,
      schema: {
        ...meta,
        summary: "Delete a webhook endpoint, its pending deliveries and its log",
        params: endpointParamsSchema,
        response: {
          200: envelope(z.object({ id: z.uuid(), deleted: z.literal(true) })),
          ...errors("No such endpoint of the caller's"),
        },
      },
    },
    async (request) => {
      await deleteEndpoint(deps.pool, ownerOf(requirePrincipal(request)), request.params.id);
      return ok({ id: request.params.id, deleted: true as const });
    },
  );

  app.post(
    "/webhooks/:id/rotate-secret",
    {
      ...common,
      schema: {
        ...meta,
        summary: "A new signing secret; the previous one keeps signing for a grace period",
        params: endpointParamsSchema,
        response: {
          200: envelope(secretAnswer.extend({ previous_secret_expires_at: z.string().nullable() })),
          ...errors("No such endpoint of the caller's"),
        },
      },
    },
    async (request) =>
      ok(
        await rotateSecret(
          deps.pool,
          ownerOf(requirePrincipal(request)),
          request.params.id,
          deps.secret_grace_ms,
        ),
      ),
  );
}

/** An endpoint's delivery log and redelivery. */
function registerDeliveryRoutes(app: HttpServer, deps: WebhookRouteDeps): void {
  const { common, meta, errors } = routeParts(deps);

  app.get(
    "/webhooks/:id/deliveries",
    {
      ...common,
      schema: {
        ...meta,
        summary:
          "The endpoint's deliveries, newest first, each with its attempts (status, response code, latency)",
        params: endpointParamsSchema,
        querystring: listQuerySchema,
        response: {
          200: envelope(z.object({ deliveries: z.array(deliveryViewSchema), pagination: paginationSchema })),
          ...errors("No such endpoint of the caller's"),
        },
      },
    },
    async (request) =>
      ok(
        await listDeliveries(deps.pool, ownerOf(requirePrincipal(request)), request.params.id, request.query),
      ),
  );

  app.post(
    "/webhooks/:id/deliveries/:delivery_id/redeliver",
    {
      ...common,
      schema: {
        ...meta,
        summary: "Send a delivery again (same webhook-id); enables a failing endpoint again",
        params: deliveryParamsSchema,
        response: {
          202: envelope(z.object({ delivery_id: z.uuid(), state: z.literal("pending") })),
          ...errors("No such endpoint or delivery of the caller's"),
        },
      },
    },
    async (request, reply) => {
      const { id, delivery_id } = request.params;
      await redeliver(deps.pool, ownerOf(requirePrincipal(request)), id, delivery_id);
      deps.wake();
      return reply.status(202).send(ok({ delivery_id, state: "pending" as const }));
    },
  );
}
