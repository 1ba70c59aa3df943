/**
 * The benchmark's webhook receiver: endpoints registered through the public API for some
 * wallets, a receiver on loopback that checks every signature (standardwebhooks) and records,
 * per event, how long after its final status it arrived. The body's `timestamp` is the time of
 * the transition that made the status final (PostgreSQL's clock, on this machine), so the figure
 * covers the commit, the dispatcher's claim, the signing and the HTTP exchange.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { createHistogram } from "node:perf_hooks";
import { Webhook } from "standardwebhooks";
import { type ApiClient, type Latency, latencyOf } from "./load.ts";

interface Arrival {
  /** When the status became final (the event's timestamp), epoch ms. */
  final_at_ms: number;
  latency_ms: number;
}

export interface WebhookProbe {
  /** Latency of the events whose status became final in [from_ms, to_ms) (first arrival of each). */
  latencyBetween(from_ms: number, to_ms: number): Latency;
  /** Deliveries whose signature did not verify (must stay 0). */
  readonly unverified: number;
  close(): Promise<void>;
}

/** Parses the event's ISO timestamp (microseconds allowed); NaN when it is not one. */
export function eventTime_ms(timestamp: unknown): number {
  return typeof timestamp === "string" ? Date.parse(timestamp) : Number.NaN;
}

/** The latency summary of the arrivals in a window, each event counted once (its first arrival). */
export function windowLatency(arrivals: readonly Arrival[], from_ms: number, to_ms: number): Latency {
  const histogram = createHistogram({ lowest: 1, highest: 600_000_000, figures: 3 });
  for (const a of arrivals) {
    if (a.final_at_ms >= from_ms && a.final_at_ms < to_ms) {
      histogram.record(Math.max(1, Math.round(a.latency_ms * 1000)));
    }
  }
  return latencyOf(histogram);
}

/**
 * Starts the receiver and registers one endpoint (transfer.completed and transfer.failed) for each
 * of `user_ids`; their transfers, as payer or payee, are then delivered to it.
 */
export async function startWebhookProbe(options: {
  api: ApiClient;
  tokenFor: (user_id: number) => Promise<string>;
  user_ids: readonly number[];
}): Promise<WebhookProbe> {
  const arrivals: Arrival[] = [];
  const seen = new Set<string>();
  const verifiers = new Map<string, Webhook>();
  let unverified = 0;
  const server: Server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => {
      const received_ms = Date.now();
      const payload = Buffer.concat(chunks).toString("utf8");
      const headers = Object.fromEntries(Object.entries(request.headers).map(([k, v]) => [k, String(v)]));
      try {
        const verifier = verifiers.get(request.url ?? "");
        if (verifier === undefined) throw new Error("no such endpoint");
        const body = verifier.verify(payload, headers) as { timestamp?: unknown };
        const webhook_id = headers["webhook-id"] ?? "";
        const final_at_ms = eventTime_ms(body.timestamp);
        // Payer and payee each get the event: count it once, when it first lands.
        if (!seen.has(webhook_id) && Number.isFinite(final_at_ms)) {
          seen.add(webhook_id);
          arrivals.push({ final_at_ms, latency_ms: Math.max(0, received_ms - final_at_ms) });
        }
        response.writeHead(204).end();
      } catch {
        unverified += 1;
        response.writeHead(400).end();
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  for (const user_id of options.user_ids) {
    const path = `/u${user_id}`;
    const answer = await options.api.call(
      "POST",
      "/webhooks",
      { authorization: `Bearer ${await options.tokenFor(user_id)}` },
      { url: `${base}${path}`, events: ["transfer.completed", "transfer.failed"] },
    );
    if (answer.status !== 201) {
      throw new Error(
        `registering a webhook for user ${user_id}: ${answer.status} ${JSON.stringify(answer.body)}`,
      );
    }
    verifiers.set(path, new Webhook(answer.body.data.secret));
  }
  return {
    latencyBetween: (from_ms, to_ms) => windowLatency(arrivals, from_ms, to_ms),
    get unverified() {
      return unverified;
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
