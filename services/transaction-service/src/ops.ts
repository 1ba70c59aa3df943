/**
 * `GET /ops/events` (operator only): what the record-event handler dropped since this process
 * started. An unknown transfer's event is not an error of this service, so it is counted here
 * (and logged at warn with its transfer id) rather than dead-lettered.
 */
import { z } from "zod";
import { type Authenticator, securityFor } from "#packages/http/auth.ts";
import { ok } from "#packages/http/errors.ts";
import { envelope, errorResponses } from "#packages/http/openapi.ts";
import type { HttpServer } from "#packages/http/server.ts";
import type { EventCounters } from "./saga/events.ts";

export function registerEventCountersRoute(
  app: HttpServer,
  auth: Authenticator,
  counters: EventCounters,
): void {
  app.get(
    "/ops/events",
    {
      onRequest: auth.guard("admin"),
      schema: {
        tags: ["ops"],
        security: securityFor("admin"),
        summary: "Record events dropped since this process started (per process)",
        response: {
          200: envelope(z.object({ unknown_transfer_events: z.number().int().nonnegative() })),
          ...errorResponses(401, 403),
        },
      },
    },
    async () => ok({ unknown_transfer_events: counters.unknown_transfer_events }),
  );
}
