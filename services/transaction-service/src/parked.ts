/**
 * `POST /ops/transfers/{id}/redrive` (operator only): send a parked transfer back to the state it
 * was parked from, due at once for the recovery sweep. A transfer is parked when its ledger step
 * met a broken invariant (machine.ts: `parked`); the operator re-drives it once the cause is
 * understood (fixed, or confirmed to have been transient). Re-driving a transfer that is not
 * parked changes nothing and answers 409.
 */
import { z } from "zod";
import { transferIdSchema } from "#packages/contracts/ids.ts";
import { type Authenticator, securityFor } from "#packages/http/auth.ts";
import { ApiError, notFound, ok } from "#packages/http/errors.ts";
import { envelope, errorResponses } from "#packages/http/openapi.ts";
import type { HttpServer } from "#packages/http/server.ts";
import type { Logger } from "#packages/log/index.ts";
import type { SagaStore } from "./saga/store.ts";

export function registerRedriveRoute(
  app: HttpServer,
  auth: Authenticator,
  store: Pick<SagaStore, "redrive">,
  logger: Logger,
): void {
  app.post(
    "/ops/transfers/:id/redrive",
    {
      onRequest: auth.guard("admin"),
      schema: {
        tags: ["ops"],
        security: securityFor("admin"),
        summary: "Re-drive a parked transfer from the state it was parked in",
        params: z.strictObject({ id: transferIdSchema }),
        response: {
          200: envelope(z.object({ id: z.string(), state: z.string() })),
          ...errorResponses(400, 401, 403, { 404: "No such transfer", 409: "The transfer is not parked" }),
        },
      },
    },
    async (request) => {
      const id = request.params.id.toLowerCase();
      const result = await store.redrive(id);
      if (result === null) throw notFound("transfer");
      if (!result.parked) {
        throw new ApiError(409, "not_parked", `transfer ${id} is ${result.transfer.state}, not parked`);
      }
      logger.warn(
        { transfer_id: id, state: result.transfer.state },
        "parked transfer re-driven by an operator",
      );
      return ok({ id, state: result.transfer.state });
    },
  );
}
