/**
 * Webhooks in the Standard Webhooks form: endpoints, an outbox written in the caller's
 * transaction, a dispatcher that delivers at least once with retries, and an SSRF guard.
 */
export { AddressRefusedError, checkUrl, refusalOf } from "./address-guard.ts";
export { dispatcherOptions, dispatcherSettings, webhookConfigShape } from "./config.ts";
export { type Dispatcher, defaultRetryPolicy, retryDelay_ms, startDispatcher } from "./dispatcher.ts";
export { newSecret, signHeaders } from "./secrets.ts";
export {
  createEndpoint,
  createEndpointBodySchema,
  deleteEndpoint,
  deliveryParamsSchema,
  deliveryViewSchema,
  endpointParamsSchema,
  endpointSchema,
  enqueueEvents,
  enqueueEventsSql,
  eventsParam,
  listDeliveries,
  listEndpoints,
  pruneDeliveries,
  redeliver,
  rotateSecret,
  schemaSql,
  schemaSqlPath,
  type WebhookEvent,
  webhookEventTypes,
} from "./store.ts";
export { type DispatcherThread, startDispatcherThread } from "./thread.ts";
