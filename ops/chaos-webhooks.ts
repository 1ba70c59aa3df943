/**
 * The chaos run's webhook side: every wallet registers an endpoint on one receiver (a path per
 * wallet), which verifies each delivery's Standard Webhooks signature and counts deliveries per
 * webhook-id. The run tells it what became final (transfers, batch items, batches); after the
 * faults every such event must reach each party's endpoint at least once, validly signed.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { WebhookReceiver } from "./webhook-receiver.ts";

export const CHAOS_WEBHOOK_EVENTS = ["transfer.completed", "transfer.failed", "disbursement.completed"];

export interface ChaosWebhookSummary {
  endpoints: number;
  events_expected: number;
  events_delivered: number;
  deliveries: number;
  unverified: number;
}

export class ChaosWebhooks {
  readonly #receiver = new WebhookReceiver();
  /** Path of each wallet's endpoint. */
  readonly #paths = new Map<number, string>();
  /** webhook-id -> the paths it must reach. */
  readonly #expected = new Map<string, Set<string>>();

  async start(): Promise<void> {
    await this.#receiver.start();
  }

  async stop(): Promise<void> {
    await this.#receiver.stop();
  }

  /** Where `user_id`'s endpoint points (register it with this URL, then call registered()). */
  urlFor(user_id: number): string {
    return `${this.#receiver.url}/u${user_id}`;
  }

  registered(user_id: number, secret: string): void {
    const path = `/u${user_id}`;
    this.#paths.set(user_id, path);
    this.#receiver.secrets.set(path, secret);
  }

  /** A final transfer (or batch item): its event goes to both parties that have an endpoint. */
  expectTransfer(t: { id: string; status: string; source_user_id: number; dest_user_id: number }): void {
    const kind = t.status === "COMPLETED" ? "completed" : "failed";
    this.#expect(`${t.id}.${kind}`, [t.source_user_id, t.dest_user_id]);
  }

  /** A final batch: `disbursement.completed` to its payer. */
  expectBatch(d: { id: string; source_user_id: number }): void {
    this.#expect(`${d.id}.completed`, [d.source_user_id]);
  }

  #expect(webhook_id: string, user_ids: number[]): void {
    const paths = this.#expected.get(webhook_id) ?? new Set<string>();
    for (const user_id of user_ids) {
      const path = this.#paths.get(user_id);
      if (path !== undefined) paths.add(path);
    }
    this.#expected.set(webhook_id, paths);
  }

  #missing(): string[] {
    const missing: string[] = [];
    for (const [webhook_id, paths] of this.#expected) {
      for (const path of paths) {
        const verified = this.#receiver.received.some(
          (r) => r.webhook_id === webhook_id && r.path === path && r.verified,
        );
        if (!verified) missing.push(`${webhook_id} to ${path}`);
      }
    }
    return missing;
  }

  /** Waits (bounded) until every expected event was delivered; the violations, and the counts. */
  async check(timeout_ms: number): Promise<{ violations: string[]; summary: ChaosWebhookSummary }> {
    const deadline = Date.now() + timeout_ms;
    let missing = this.#missing();
    while (missing.length > 0 && Date.now() < deadline) {
      await sleep(500);
      missing = this.#missing();
    }
    const received = this.#receiver.received;
    const unverified = received.filter((r) => !r.verified);
    const violations = [
      ...missing
        .slice(0, 20)
        .map((m) => `webhook: ${m} not delivered with a valid signature within ${timeout_ms} ms`),
      ...unverified
        .slice(0, 20)
        .map((r) => `webhook: a delivery of ${r.webhook_id} to ${r.path} had no valid signature`),
    ];
    const delivered = new Set(received.filter((r) => r.verified).map((r) => r.webhook_id));
    return {
      violations,
      summary: {
        endpoints: this.#paths.size,
        events_expected: this.#expected.size,
        events_delivered: [...this.#expected.keys()].filter((id) => delivered.has(id)).length,
        deliveries: received.length,
        unverified: unverified.length,
      },
    };
  }
}
