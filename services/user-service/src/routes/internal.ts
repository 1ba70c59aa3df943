/**
 * The internal listener's routes: the saga's two-phase ledger steps (LEDGER_TOKEN only, one at a
 * time or in batches), a transfer's hold and the audit. Never served on the public listener.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { FastifyBaseLogger, FastifyInstance, RawServerDefault } from "fastify";
import type { ZodTypeProvider } from "fastify-type-provider-zod";
import { z } from "zod";
import {
  holdRequestSchema,
  holdSchema,
  LEDGER_BATCH_MAX,
  type LedgerOperation,
  ledgerBatchRequestSchema,
  ledgerStepResultSchema,
} from "#packages/contracts/ledger.ts";
import { securityFor } from "#packages/http/auth.ts";
import { ok } from "#packages/http/errors.ts";
import { BODY_ERRORS, envelope, errorResponses } from "#packages/http/openapi.ts";
import { type HttpServer, refuseMethod } from "#packages/http/server.ts";
import { assert } from "#packages/runtime/assert.ts";
import { toApiHold } from "../domain.ts";
import { audit } from "../ledger/audit.ts";
import { applyBatch, getHold, holdFunds, postHold, voidHold } from "../ledger/steps.ts";
import { timedBatch } from "../metrics.ts";
import type { RouteDeps } from "./deps.ts";
import { orRefused, refuse } from "./refusals.ts";
import { auditSchema, emptyBody, transferParams } from "./schemas.ts";

/** The internal listener inside its /internal plugin scope, typed for zod schemas. */
type InternalServer = FastifyInstance<
  RawServerDefault,
  IncomingMessage,
  ServerResponse,
  FastifyBaseLogger,
  ZodTypeProvider
>;

const internalSchema = { tags: ["internal"], security: securityFor("ledger") };
const holdResponse = envelope(z.object({ hold: holdSchema })).describe("The hold as it now stands");
const holdErrors = {
  404: "No such hold, source or destination (see `code`)",
  409: "The hold is in another state, or does not match (see `code`)",
  422: "Insufficient funds, or source and destination are the same wallet",
};

export function registerInternalRoutes(internal: HttpServer, deps: RouteDeps): void {
  internal.register(
    async (plugin) => {
      // A plugin scope starts without the type provider; this restores typed zod requests.
      const scope = plugin.withTypeProvider<ZodTypeProvider>();
      registerSteps(scope, deps);
      registerBatch(scope, deps);
      registerReads(scope, deps);
    },
    { prefix: "/internal" },
  );
  // GET /internal/transfers/batch would otherwise be read as the hold of transfer "batch".
  refuseMethod(internal, "GET", "/internal/transfers/batch", ["POST"]);
}

function registerSteps(internal: InternalServer, deps: RouteDeps): void {
  const { pool } = deps;
  // The saga's credential only: a user's token, the operator's or the read side's cannot move money.
  const ledgerOnly = { onRequest: deps.auth.guard("ledger") };
  const response = { 200: holdResponse, ...errorResponses(BODY_ERRORS, 401, 403, holdErrors) };
  internal.post(
    "/transfers/:transfer_id/hold",
    {
      ...ledgerOnly,
      schema: {
        ...internalSchema,
        summary: "Saga step: move the amount from the source wallet to clearing (idempotent by transfer id)",
        params: transferParams,
        body: holdRequestSchema,
        response,
      },
    },
    async (request) => {
      const hold = await orRefused(
        holdFunds(pool, { transfer_id: request.params.transfer_id, ...request.body }),
      );
      return ok({ hold: toApiHold(hold) });
    },
  );
  internal.post(
    "/transfers/:transfer_id/post",
    {
      ...ledgerOnly,
      schema: {
        ...internalSchema,
        summary: "Saga step: move the held amount from clearing to the destination (idempotent)",
        params: transferParams,
        body: emptyBody,
        response,
      },
    },
    async (request) => ok({ hold: toApiHold(await orRefused(postHold(pool, request.params.transfer_id))) }),
  );
  internal.post(
    "/transfers/:transfer_id/void",
    {
      ...ledgerOnly,
      schema: {
        ...internalSchema,
        summary: "Saga step: give the held amount back to the source (idempotent)",
        params: transferParams,
        body: emptyBody,
        response,
      },
    },
    async (request) => ok({ hold: toApiHold(await orRefused(voidHold(pool, request.params.transfer_id))) }),
  );
}

function registerBatch(internal: InternalServer, deps: RouteDeps): void {
  internal.post(
    "/transfers/batch",
    {
      onRequest: deps.auth.guard("ledger"),
      schema: {
        ...internalSchema,
        summary: `Saga steps in one transaction: up to ${LEDGER_BATCH_MAX} holds, posts and voids, one result each (one step per transfer)`,
        body: ledgerBatchRequestSchema,
        response: {
          200: envelope(z.object({ results: z.array(ledgerStepResultSchema) })).describe(
            "One result per operation, in input order: the hold as it now stands, or the refusal (`code` as the single-step routes answer it). A refusal changes nothing and does not affect the other operations. The operations are applied in lock order (by wallet, then transfer id), not in input order: none may count on another of its batch",
          ),
          ...errorResponses(BODY_ERRORS, 401, 403, {
            422: "A transfer appears more than once (one step per transfer per batch); nothing was applied",
          }),
        },
      },
    },
    async (request) => {
      const operations: LedgerOperation[] = request.body.operations;
      refuseRepeatedTransfers(operations);
      const results = await timedBatch(deps.metrics, operations.length, () =>
        applyBatch(deps.pool, operations),
      );
      return ok({
        results: operations.map(({ transfer_id, op }, index) => {
          const result = results[index];
          assert(result !== undefined, `operation ${index} of the batch has no result`);
          return result.ok
            ? { transfer_id, op, ok: true as const, hold: toApiHold(result.hold) }
            : { transfer_id, op, ok: false as const, code: result.code, message: result.message };
        }),
      });
    },
  );
}

/**
 * One step per transfer: two steps of one transfer in one transaction would need an order between
 * them that the batch's lock order does not give. Well-formed, so 422. (Ids arrive lower-cased by
 * their schema, so two spellings of one UUID are one transfer.)
 */
function refuseRepeatedTransfers(operations: readonly LedgerOperation[]): void {
  const first = new Map<string, number>();
  for (const [index, operation] of operations.entries()) {
    const earlier = first.get(operation.transfer_id);
    if (earlier !== undefined) {
      throw refuse(
        "transfer_repeated_in_batch",
        `operations.${index}.transfer_id: transfer ${operation.transfer_id} already appears at operations.${earlier}; one step per transfer per batch`,
      );
    }
    first.set(operation.transfer_id, index);
  }
}

function registerReads(internal: InternalServer, deps: RouteDeps): void {
  internal.get(
    "/transfers/:transfer_id",
    {
      onRequest: deps.auth.guard("ledger", "admin"),
      schema: {
        ...internalSchema,
        security: securityFor("ledger", "admin"),
        summary: "Read a transfer's hold",
        params: transferParams,
        response: {
          200: holdResponse,
          ...errorResponses(400, 401, 403, { 404: "No hold for this transfer" }),
        },
      },
    },
    async (request) => {
      const hold = await getHold(deps.pool, request.params.transfer_id);
      if (hold === null) throw refuse("hold_not_found", `no hold for transfer ${request.params.transfer_id}`);
      return ok({ hold: toApiHold(hold) });
    },
  );
  internal.get(
    "/audit",
    {
      onRequest: deps.auth.guard("admin"),
      schema: {
        ...internalSchema,
        security: securityFor("admin"),
        summary: "The ledger's consistency figures (I1, I2, I6) from one snapshot",
        response: { 200: envelope(auditSchema).describe("The figures"), ...errorResponses(401, 403) },
      },
    },
    async () => ok(await audit(deps.pool)),
  );
}
