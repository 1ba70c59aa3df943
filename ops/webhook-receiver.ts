/**
 * A webhook receiver on loopback for the tests and the chaos run: verifies every delivery's Standard Webhooks
 * signature with the `standardwebhooks` library and counts deliveries per webhook-id.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { Webhook } from "standardwebhooks";

export interface Received {
  path: string;
  webhook_id: string;
  // biome-ignore lint/suspicious/noExplicitAny: free-form JSON
  body: any;
  verified: boolean;
  /** The W3C trace context the delivery carried, if any. */
  traceparent: string | undefined;
  at_ms: number;
}

export class WebhookReceiver {
  readonly received: Received[] = [];
  /** Secrets by path (one receiver serves several endpoints: /a, /b, ...). */
  readonly secrets = new Map<string, string>();
  #server: Server | undefined;
  url = "";

  async start(): Promise<void> {
    this.#server = createServer((request, response) => {
      const chunks: Buffer[] = [];
      request.on("data", (chunk: Buffer) => chunks.push(chunk));
      request.on("end", () => {
        const payload = Buffer.concat(chunks).toString("utf8");
        const headers = Object.fromEntries(
          Object.entries(request.headers).map(([name, value]) => [name, String(value)]),
        );
        const secret = this.secrets.get(request.url ?? "");
        let verified = false;
        try {
          if (secret !== undefined) new Webhook(secret).verify(payload, headers);
          verified = secret !== undefined;
        } catch {
          verified = false;
        }
        this.received.push({
          path: request.url ?? "",
          webhook_id: headers["webhook-id"] ?? "",
          body: JSON.parse(payload),
          verified,
          traceparent: headers.traceparent,
          at_ms: Date.now(),
        });
        response.writeHead(verified ? 200 : 400).end();
      });
    });
    await new Promise<void>((resolve) => this.#server?.listen(0, "127.0.0.1", resolve));
    this.url = `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    this.#server?.closeAllConnections();
    await new Promise<void>((resolve) => this.#server?.close(() => resolve()));
  }

  /** Deliveries with this webhook-id (to this path, if given). */
  count(webhook_id: string, path?: string): number {
    return this.received.filter((r) => r.webhook_id === webhook_id && (path === undefined || r.path === path))
      .length;
  }

  async until(what: string, predicate: () => boolean, timeout_ms = 30_000): Promise<void> {
    const deadline = Date.now() + timeout_ms;
    while (!predicate()) {
      if (Date.now() > deadline) throw new Error(`webhook receiver: ${what} not seen after ${timeout_ms} ms`);
      await sleep(50);
    }
  }
}
