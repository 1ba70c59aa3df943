/**
 * The saga's calls to user-service's two-phase ledger (hold, post, void), keyed by transfer id
 * so any retry returns the first result. An answer is one of: done (with the balances the
 * record needs), a definitive refusal (the saga moves to its failure branch), or no answer
 * (timeout, 5xx, network) which leaves the saga where it is for a later retry.
 */
import { z } from "zod";
import { balanceMinorSchema } from "#packages/contracts/money.ts";
import type { FailureReason } from "#packages/contracts/transfer.ts";
import { callJson } from "#packages/http/client.ts";

const holdBodySchema = z.object({
  success: z.literal(true),
  data: z.object({
    hold: z.object({
      state: z.enum(["held", "posted", "voided"]),
      source_balance_before: balanceMinorSchema,
      dest_balance_before: balanceMinorSchema.nullable().optional(),
    }),
  }),
});
const errorBodySchema = z.object({ success: z.literal(false), code: z.string(), message: z.string() });

export type LedgerAnswer =
  | { kind: "ok"; source_balance_before: number; dest_balance_before: number | null }
  | { kind: "rejected"; reason: FailureReason };

/** The ledger said something the saga's state rules out: a bug, never retried into money movement. */
export class LedgerInvariantError extends Error {}

export class LedgerClient {
  readonly #base_url: string;
  readonly #timeout_ms: number;
  readonly #headers: Record<string, string>;

  constructor(base_url: string, service_token: string, timeout_ms: number) {
    this.#base_url = base_url.replace(/\/$/, "");
    this.#timeout_ms = timeout_ms;
    this.#headers = { authorization: `Bearer ${service_token}` };
  }

  hold(
    transfer_id: string,
    body: { source_user_id: number; dest_user_id: number; amount: number },
  ): Promise<LedgerAnswer> {
    return this.#call(transfer_id, "hold", body, {
      insufficient_funds: "insufficient_funds",
      source_not_found: "source_not_found",
      dest_not_found: "dest_not_found",
    });
  }

  post(transfer_id: string): Promise<LedgerAnswer> {
    return this.#call(transfer_id, "post", {}, { dest_unavailable: "dest_unavailable" });
  }

  void(transfer_id: string): Promise<LedgerAnswer> {
    return this.#call(transfer_id, "void", {}, {});
  }

  async #call(
    transfer_id: string,
    step: "hold" | "post" | "void",
    body: unknown,
    refusals: Record<string, FailureReason>,
  ): Promise<LedgerAnswer> {
    const url = `${this.#base_url}/internal/transfers/${transfer_id}/${step}`;
    const response = await callJson(url, {
      method: "POST",
      body,
      timeout_ms: this.#timeout_ms,
      headers: this.#headers,
    });
    if (response.status === 200) {
      const parsed = holdBodySchema.safeParse(response.body);
      if (!parsed.success)
        throw new LedgerInvariantError(
          `${step} ${transfer_id}: unexpected answer ${JSON.stringify(response.body)}`,
        );
      const hold = parsed.data.data.hold;
      const expected = step === "hold" ? null : step === "post" ? "posted" : "voided";
      if (expected !== null && hold.state !== expected) {
        throw new LedgerInvariantError(`${step} ${transfer_id}: hold is ${hold.state}`);
      }
      return {
        kind: "ok",
        source_balance_before: hold.source_balance_before,
        dest_balance_before: hold.dest_balance_before ?? null,
      };
    }
    if (response.status >= 400 && response.status < 500) {
      const error = errorBodySchema.safeParse(response.body);
      const reason = error.success ? refusals[error.data.code] : undefined;
      if (reason !== undefined) return { kind: "rejected", reason };
      // 401/403 (credentials) or a refusal the saga never expects (hold_voided, hold_mismatch...).
      throw new LedgerInvariantError(
        `${step} ${transfer_id}: ledger answered ${response.status} ${JSON.stringify(response.body)}`,
      );
    }
    throw new Error(`${step} ${transfer_id}: ledger answered ${response.status}`);
  }
}
