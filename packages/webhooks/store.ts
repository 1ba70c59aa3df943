/**
 * The webhook tables (schema.sql): endpoints a user registers, the events enqueued for them in
 * the caller's transaction, the delivery log, and a redelivery on request. Every query here is
 * scoped to the owner, so a user never sees or touches another user's endpoints.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { z } from "zod";
import { uuidv7 } from "#packages/contracts/ids.ts";
import {
  decodeCursor,
  encodeCursor,
  PAGE_LIMIT_DEFAULT,
  PAGE_LIMIT_MAX,
  type paginationSchema,
} from "#packages/contracts/pagination.ts";
import { ApiError, notFound } from "#packages/http/errors.ts";
import { type Pool, type PoolClient, withTransaction } from "#packages/pg/index.ts";
import { assert } from "#packages/runtime/assert.ts";
import { rowFromContext } from "#packages/tracing/carriers.ts";
import { type AddressGuardOptions, AddressRefusedError, checkUrl } from "./address-guard.ts";
import { newSecret } from "./secrets.ts";

/** The DDL, for a service migration to include (its one home is schema.sql beside this file). */
export const schemaSqlPath = join(import.meta.dirname, "schema.sql");
/** The DDL's later changes, in order, each a migration of its own in the service. */
export const schemaChangePaths = [
  "traceparent.sql",
  "due-by-endpoint.sql",
  "state-unmeasured.sql",
  "due-covering.sql",
].map((file) => join(import.meta.dirname, file));
/** The tables as the migrations leave them (for tests that create them afresh). */
export function schemaSql(): string {
  return [schemaSqlPath, ...schemaChangePaths].map((path) => readFileSync(path, "utf8")).join("\n");
}

export const webhookEventTypes = ["transfer.completed", "transfer.failed", "disbursement.completed"] as const;
export type WebhookEventType = (typeof webhookEventTypes)[number];

/** Most endpoints one user may register. */
export const ENDPOINTS_PER_USER_MAX = 10;
/** Most attempts shown per delivery (the latest ones). */
export const ATTEMPTS_SHOWN_MAX = 50;

/** `POST /webhooks` body. */
export const createEndpointBodySchema = z.strictObject({
  url: z.string().min(8).max(2048),
  events: z
    .array(z.enum(webhookEventTypes))
    .min(1)
    .max(webhookEventTypes.length)
    .refine((events) => new Set(events).size === events.length, { error: "events must not repeat" })
    // Published in the OpenAPI document too, so clients (and schema checks) know repeats are refused.
    .meta({ uniqueItems: true }),
});
export type CreateEndpointBody = z.infer<typeof createEndpointBodySchema>;

/** An event as the saga hands it over: who it concerns and what to say. */
export const webhookEventSchema = z.strictObject({
  /** Becomes the webhook-id: stable, so that every attempt and every redelivery carries the same one. */
  id: z.string().regex(/^[A-Za-z0-9_.:-]{1,128}$/),
  type: z.enum(webhookEventTypes),
  /** The users whose endpoints receive it (payer and payee of a transfer, the payer of a batch). */
  user_ids: z.array(z.number().int().positive().max(Number.MAX_SAFE_INTEGER)).min(1).max(2),
  data: z.record(z.string(), z.unknown()),
});
export type WebhookEvent = z.infer<typeof webhookEventSchema>;
const EVENTS_PER_CALL_MAX = 1_000;
export const EVENT_DATA_BYTES_MAX = 60 * 1024;

/** `:id` and `:delivery_id` of the routes: ids are UUIDs, checked before any query. */
export const endpointParamsSchema = z.strictObject({ id: z.uuid() });
export const deliveryParamsSchema = z.strictObject({ id: z.uuid(), delivery_id: z.uuid() });

/** An endpoint as the API shows it: never its secret. */
export const endpointSchema = z.object({
  id: z.uuid(),
  owner_user_id: z.number().int().positive(),
  url: z.string(),
  events: z.array(z.enum(webhookEventTypes)),
  state: z.enum(["enabled", "failing"]),
  failing_since: z.string().nullable(),
  created_at: z.string(),
});
export type Endpoint = z.infer<typeof endpointSchema>;

const endpointColumns = `id, owner_user_id::float8 AS owner_user_id, url, events, state,
  to_json(failing_since) #>> '{}' AS failing_since, to_json(created_at) #>> '{}' AS created_at`;

function refused(error: unknown): never {
  if (error instanceof AddressRefusedError) {
    throw new ApiError(422, "webhook_url_refused", `webhook URL refused: ${error.message}`);
  }
  throw error;
}

/** Registers an endpoint; the answer carries its signing secret, which is never shown again. */
export async function createEndpoint(
  pool: Pool,
  owner_user_id: number,
  body: CreateEndpointBody,
  guard: AddressGuardOptions,
): Promise<{ endpoint: Endpoint; secret: string }> {
  await checkUrl(body.url, guard).catch(refused);
  const secret = newSecret();
  return withTransaction(pool, async (client) => {
    // Serializes one user's registrations, so the count below cannot be raced past the limit.
    await client.query("SELECT pg_advisory_xact_lock(727275, hashtext($1::text))", [String(owner_user_id)]);
    const count = await client.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM webhook_endpoints WHERE owner_user_id = $1",
      [owner_user_id],
    );
    if ((count.rows[0]?.n ?? 0) >= ENDPOINTS_PER_USER_MAX) {
      throw new ApiError(
        409,
        "webhook_endpoints_limit",
        `at most ${ENDPOINTS_PER_USER_MAX} endpoints per user`,
      );
    }
    const row = await client.query<Endpoint>(
      `INSERT INTO webhook_endpoints (id, owner_user_id, url, events, secret)
       VALUES ($1, $2, $3, $4, $5) RETURNING ${endpointColumns}`,
      [uuidv7(), owner_user_id, body.url, body.events, secret],
    );
    return { endpoint: row.rows[0] as Endpoint, secret };
  });
}

export async function listEndpoints(pool: Pool, owner_user_id: number): Promise<Endpoint[]> {
  const rows = await pool.query<Endpoint>(
    `SELECT ${endpointColumns} FROM webhook_endpoints WHERE owner_user_id = $1 ORDER BY created_at, id LIMIT $2`,
    [owner_user_id, ENDPOINTS_PER_USER_MAX],
  );
  return rows.rows;
}

/** Deletes an endpoint with its pending deliveries and its log. */
export async function deleteEndpoint(pool: Pool, owner_user_id: number, id: string): Promise<void> {
  const deleted = await pool.query("DELETE FROM webhook_endpoints WHERE id = $1 AND owner_user_id = $2", [
    id,
    owner_user_id,
  ]);
  if (deleted.rowCount === 0) throw notFound("webhook endpoint");
}

/**
 * A new signing secret; the old one keeps signing (as a second signature) for grace_ms, so a
 * receiver can switch keys without refusing deliveries. grace_ms = 0 drops the old key at once.
 */
export async function rotateSecret(
  pool: Pool,
  owner_user_id: number,
  id: string,
  grace_ms: number,
): Promise<{ secret: string; previous_secret_expires_at: string | null }> {
  const secret = newSecret();
  const rotated = await pool.query<{ previous_secret_expires_at: string | null }>(
    `UPDATE webhook_endpoints
        SET previous_secret = CASE WHEN $4::int > 0 THEN secret END,
            previous_secret_expires_at = CASE WHEN $4::int > 0 THEN now() + make_interval(secs => $4::int / 1000.0) END,
            secret = $3, updated_at = now()
      WHERE id = $1 AND owner_user_id = $2
      RETURNING to_json(previous_secret_expires_at) #>> '{}' AS previous_secret_expires_at`,
    [id, owner_user_id, secret, grace_ms],
  );
  const row = rotated.rows[0];
  if (row === undefined) throw notFound("webhook endpoint");
  return { secret, previous_secret_expires_at: row.previous_secret_expires_at };
}

/** The events as the one jsonb parameter of enqueueEventsSql: validated and bounded. */
export function eventsParam(events: WebhookEvent[]): string {
  assert(
    events.length <= EVENTS_PER_CALL_MAX,
    `at most ${EVENTS_PER_CALL_MAX} webhook events per call, got ${events.length}`,
  );
  const valid = events.map((event) => webhookEventSchema.parse(event));
  for (const event of valid) {
    // The body's bound in schema.sql, with room for its type and timestamp: refused here with the
    // event's name rather than as a constraint violation of the whole statement.
    assert(
      Buffer.byteLength(JSON.stringify(event.data)) <= EVENT_DATA_BYTES_MAX,
      `webhook event ${event.id} has more than ${EVENT_DATA_BYTES_MAX} bytes of data`,
    );
  }
  return JSON.stringify(valid);
}

/**
 * The fan-out statement: one delivery per event per subscribed, enabled endpoint of the users it
 * concerns; an event already enqueued for an endpoint (same id) is not enqueued twice. `events`
 * is the placeholder of an eventsParam value; `gate`, an optional condition on the event `ev`,
 * lets a statement that also moves state embed this as a data-modifying CTE and enqueue only the
 * events of the rows it really moved, e.g. `ev.data->>'transfer_id' IN (SELECT id::text FROM moved)`.
 * `traceparent`, a text expression (it may read `ev`), is the W3C trace context each delivery
 * continues (carriers.ts): a placeholder, or a copy from the row the event is about.
 */
export function enqueueEventsSql(events: string, gate = "true", traceparent = "NULL"): string {
  return `INSERT INTO webhook_deliveries
       (id, endpoint_id, webhook_id, event_type, payload, next_attempt_at, retry_from, created_at, updated_at,
        traceparent)
     SELECT gen_random_uuid(), e.id, ev.id, ev.type,
            jsonb_build_object('type', ev.type,
                               'timestamp', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                               'data', ev.data),
            now(), now(), now(), now(), ${traceparent}
       FROM jsonb_to_recordset(${events}::jsonb) AS ev(id text, type text, user_ids bigint[], data jsonb)
       JOIN webhook_endpoints e
         ON e.owner_user_id = ANY (ev.user_ids) AND ev.type = ANY (e.events) AND e.state = 'enabled'
      WHERE ${gate}
     ON CONFLICT (webhook_id, endpoint_id) DO NOTHING`;
}

/**
 * Enqueues the events in the caller's transaction: the rows commit with the transition that
 * caused the events, or not at all. Returns the number of deliveries enqueued. Their deliveries
 * continue `traceparent`, by default the active context's: the trace of what caused them.
 */
export async function enqueueEvents(
  client: PoolClient,
  events: WebhookEvent[],
  traceparent: string | null = rowFromContext(),
): Promise<number> {
  if (events.length === 0) return 0;
  const inserted = await client.query(enqueueEventsSql("$1", "true", "$2::text"), [
    eventsParam(events),
    traceparent,
  ]);
  return inserted.rowCount ?? 0;
}

/** One delivery of `GET /webhooks/:id/deliveries`, with its attempts (oldest first). */
export const deliveryViewSchema = z.object({
  id: z.uuid(),
  webhook_id: z.string(),
  event_type: z.enum(webhookEventTypes),
  state: z.enum(["pending", "delivered", "failed"]),
  attempts: z.array(
    z.object({
      attempt: z.number().int().positive(),
      status: z.enum(["succeeded", "failed"]),
      response_code: z.number().int().nullable(),
      latency_ms: z.number().int().nonnegative(),
      error: z.string().nullable(),
      attempted_at: z.string(),
    }),
  ),
  next_attempt_at: z.string().nullable(),
  created_at: z.string(),
});
export type DeliveryView = z.infer<typeof deliveryViewSchema>;

/**
 * The endpoint's deliveries, newest first, each with its latest attempts (oldest first), a page
 * at a time (keyset pagination: the cursor of packages/contracts/pagination.ts).
 */
export async function listDeliveries(
  pool: Pool,
  owner_user_id: number,
  endpoint_id: string,
  page: { limit: number; cursor?: string | undefined } = { limit: PAGE_LIMIT_DEFAULT },
): Promise<{ deliveries: DeliveryView[]; pagination: z.infer<typeof paginationSchema> }> {
  await ownedEndpoint(pool, owner_user_id, endpoint_id);
  const limit = Math.min(Math.max(page.limit, 1), PAGE_LIMIT_MAX);
  const after = page.cursor === undefined ? null : decodeCursor(page.cursor);
  if (page.cursor !== undefined && after === null) {
    throw new ApiError(400, "invalid_cursor", "cursor is not one this API returned");
  }
  const rows = await pool.query<DeliveryView>(
    `SELECT d.id, d.webhook_id, d.event_type, d.state,
            CASE WHEN d.state = 'pending' THEN to_json(d.next_attempt_at) #>> '{}' END AS next_attempt_at,
            to_json(d.created_at) #>> '{}' AS created_at,
            COALESCE((SELECT json_agg(json_build_object(
                        'attempt', a.attempt, 'status', a.status, 'response_code', a.response_code,
                        'latency_ms', a.latency_ms, 'error', a.error, 'attempted_at', a.attempted_at) ORDER BY a.id)
                        FROM (SELECT * FROM webhook_attempts WHERE delivery_id = d.id ORDER BY id DESC LIMIT $3) a),
                     '[]'::json) AS attempts
       FROM webhook_deliveries d
      WHERE d.endpoint_id = $1 AND ($4::timestamptz IS NULL OR (d.created_at, d.id) < ($4::timestamptz, $5::uuid))
      ORDER BY d.created_at DESC, d.id DESC
      LIMIT $2`,
    [endpoint_id, limit + 1, ATTEMPTS_SHOWN_MAX, after?.t ?? null, after?.id ?? null],
  );
  const has_more = rows.rows.length > limit;
  const deliveries = rows.rows.slice(0, limit);
  const last = deliveries.at(-1);
  const next_cursor = has_more && last ? encodeCursor({ t: last.created_at, id: last.id }) : null;
  return { deliveries, pagination: { limit, has_more, next_cursor } };
}

async function ownedEndpoint(pool: Pool | PoolClient, owner_user_id: number, id: string): Promise<void> {
  const found = await pool.query("SELECT 1 FROM webhook_endpoints WHERE id = $1 AND owner_user_id = $2", [
    id,
    owner_user_id,
  ]);
  if (found.rowCount === 0) throw notFound("webhook endpoint");
}

/**
 * Sends one delivery again, with the same webhook-id, as soon as a dispatcher is free; its retry
 * window starts anew. Asking for it is the user saying the endpoint works again, so a failing
 * endpoint is enabled again.
 */
export async function redeliver(
  pool: Pool,
  owner_user_id: number,
  endpoint_id: string,
  delivery_id: string,
): Promise<void> {
  await withTransaction(pool, async (client) => {
    await ownedEndpoint(client, owner_user_id, endpoint_id);
    const updated = await client.query(
      `UPDATE webhook_deliveries
          SET state = 'pending', next_attempt_at = now(), retry_from = now(), claim_token = NULL, updated_at = now()
        WHERE id = $1 AND endpoint_id = $2`,
      [delivery_id, endpoint_id],
    );
    if (updated.rowCount === 0) throw notFound("webhook delivery");
    await client.query(
      `UPDATE webhook_endpoints SET state = 'enabled', failing_since = NULL, updated_at = now()
        WHERE id = $1 AND state = 'failing'`,
      [endpoint_id],
    );
  });
}

/**
 * Deletes finished deliveries (delivered or failed), with their attempts, whose last change is
 * older than retention_ms; at most batch_max per call, so a large backlog never makes one long
 * statement. Returns how many were deleted: a full batch means more may be left.
 */
export async function pruneDeliveries(pool: Pool, retention_ms: number, batch_max: number): Promise<number> {
  const deleted = await pool.query(
    `DELETE FROM webhook_deliveries WHERE id IN (
       SELECT id FROM webhook_deliveries
        WHERE state <> 'pending' AND updated_at < now() - make_interval(secs => $1::bigint / 1000.0)
        ORDER BY updated_at LIMIT $2)`,
    [retention_ms, batch_max],
  );
  return deleted.rowCount ?? 0;
}
