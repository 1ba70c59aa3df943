/**
 * `PUT /ops/crash {point}` (operator only, FAULT_INJECTION=true only): arm a one-shot crash
 * point, so the next time this process reaches it, it dies with SIGKILL. Fault tests use it to
 * kill a service at the worst moment of a step, deterministically.
 */
import { z } from "zod";
import type { CrashPoint, CrashSwitch } from "#packages/runtime/faults.ts";
import { type Authenticator, securityFor } from "./auth.ts";
import { ok } from "./errors.ts";
import { BODY_ERRORS, envelope, errorResponses } from "./openapi.ts";
import type { HttpServer } from "./server.ts";

export function registerCrashRoute(
  app: HttpServer,
  auth: Authenticator,
  crashes: CrashSwitch,
  points: readonly [CrashPoint, ...CrashPoint[]],
): void {
  const body = z.strictObject({ point: z.enum(points) });
  app.put(
    "/ops/crash",
    {
      onRequest: auth.guard("admin"),
      schema: {
        tags: ["ops"],
        security: securityFor("admin"),
        summary:
          "Arm a one-shot crash point: the process SIGKILLs itself when it next reaches it (test builds only)",
        body,
        response: {
          200: envelope(z.object({ armed: z.array(z.string()) })),
          ...errorResponses(BODY_ERRORS, 401, 403),
        },
      },
    },
    async (request) => {
      crashes.arm(request.body.point);
      request.log.warn({ point: request.body.point }, "crash point armed");
      return ok({ armed: crashes.armed() });
    },
  );
}
