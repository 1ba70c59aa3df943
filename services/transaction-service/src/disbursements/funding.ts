/**
 * Funding a disbursement: one call to the ledger (`POST /internal/disbursements/:id/fund`, one
 * commit for every item), then one saga transaction that records the answer and starts every
 * funded item on the ordinary saga from `recorded` (debited, its credit next), whose credits
 * the funder then drives at once. Idempotent end to end: the ledger answers a repeated
 * funding with its first decision, and applying it is a compare-and-set, so the creating
 * request, the sweep and a restarted process may all drive the same disbursement; an item whose
 * credit this process does not finish is the transfer sweep's, like any transfer.
 */
import type { z } from "zod";
import { fundingAnswerSchema } from "#packages/contracts/ledger.ts";
import type { FailureReason } from "#packages/contracts/transfer.ts";
import { callJson } from "#packages/http/client.ts";
import type { Logger } from "#packages/log/index.ts";
import { assert, InvariantError } from "#packages/runtime/assert.ts";
import { type CrashHook, noCrashes } from "#packages/runtime/faults.ts";
import { runConcurrently } from "#packages/runtime/loops.ts";
import { LedgerInvariantError } from "../saga/ledger-client.ts";
import { recordOf } from "../saga/machine.ts";
import type { SagaRunner } from "../saga/runner.ts";
import type { SagaStore } from "../saga/store.ts";
import type { Disbursement, DisbursementStore, ItemFunding, ItemRow } from "./store.ts";

/**
 * A funding of 1,000 items is one ledger statement of a few thousand rows: far longer than one
 * step, so it gets its own bound. A call that runs out is retried by the sweep (idempotent).
 */
export const FUNDING_TIMEOUT_MS = 20_000;

export interface FundingOutcome {
  refused: FailureReason | null;
  items: ItemFunding[];
}

export class FundingClient {
  readonly #url: string;
  readonly #headers: Record<string, string>;
  readonly #timeout_ms: number;

  constructor(base_url: string, ledger_token: string, timeout_ms = FUNDING_TIMEOUT_MS) {
    this.#url = `${base_url.replace(/\/$/, "")}/internal/disbursements`;
    this.#headers = { authorization: `Bearer ${ledger_token}` };
    this.#timeout_ms = timeout_ms;
  }

  /** Throws when the ledger does not answer (retry later) or answers what cannot be (a bug). */
  async fund(disbursement: Disbursement, items: readonly ItemRow[]): Promise<FundingOutcome> {
    const response = await callJson(`${this.#url}/${disbursement.id}/fund`, {
      method: "POST",
      body: {
        source_user_id: disbursement.source_user_id,
        items: items.map((i) => ({ transfer_id: i.id, dest_user_id: i.dest_user_id, amount: i.amount })),
      },
      timeout_ms: this.#timeout_ms,
      headers: this.#headers,
    });
    const what = `funding of disbursement ${disbursement.id} answered ${response.status}`;
    if (response.status >= 500) throw new Error(`${what} ${JSON.stringify(response.body)}`);
    const parsed = fundingAnswerSchema.safeParse(response.body);
    if (response.status !== 200 || !parsed.success || parsed.data.data.results.length !== items.length) {
      throw new LedgerInvariantError(`${what}: ${JSON.stringify(response.body)}`);
    }
    return outcomeOf(disbursement.id, items, parsed.data.data.results);
  }
}

function outcomeOf(
  id: string,
  items: readonly ItemRow[],
  results: z.infer<typeof fundingAnswerSchema>["data"]["results"],
): FundingOutcome {
  const first = results[0]?.result;
  if (first === "insufficient_funds" || first === "source_not_found") {
    return { refused: first, items: items.map((i) => ({ transfer_id: i.id, held: false, reason: first })) };
  }
  return {
    refused: null,
    items: items.map((item, index) => {
      const r = results[index];
      if (r === undefined || r.transfer_id !== item.id) {
        throw new LedgerInvariantError(`funding of ${id}: answer ${index} is not for item ${item.id}`);
      }
      if (r.result === "ok" && r.source_balance_before !== undefined) {
        return { transfer_id: item.id, held: true, source_init_bal: r.source_balance_before };
      }
      if (r.result === "dest_not_found")
        return { transfer_id: item.id, held: false, reason: "dest_not_found" };
      throw new LedgerInvariantError(`funding of ${id}: item ${item.id} answered ${r.result}`);
    }),
  };
}

/** Items of one batch whose credits are driven at once (the ledger client batches their posts). */
export const ITEM_CREDITS_CONCURRENCY_MAX = 256;

export class DisbursementFunder {
  readonly #store: DisbursementStore;
  readonly #saga: Pick<SagaStore, "getMany">;
  readonly #client: Pick<FundingClient, "fund">;
  readonly #runner: Pick<SagaRunner, "recordCommand" | "advance">;
  readonly #logger: Logger;
  readonly #waits: { step_ms: number; record_ms: number };
  /** Credits being driven after a funding (stop() waits for them). */
  readonly #crediting = new Set<Promise<void>>();
  /** Fault tests: die between the ledger's funding commit and the saga's record of it. */
  crashes: CrashHook = noCrashes;

  constructor(deps: {
    store: DisbursementStore;
    saga: Pick<SagaStore, "getMany">;
    client: Pick<FundingClient, "fund">;
    runner: Pick<SagaRunner, "recordCommand" | "advance">;
    logger: Logger;
    /** How long a funded item may wait for its credit, and a refused one for its FAILED record, before the sweep steps in. */
    waits: { step_ms: number; record_ms: number };
  }) {
    this.#store = deps.store;
    this.#saga = deps.saga;
    this.#client = deps.client;
    this.#runner = deps.runner;
    this.#logger = deps.logger;
    this.#waits = deps.waits;
  }

  /**
   * Funds the disbursement if it is still `created`; returns it as it then stands. The funded
   * items' credits are started, not awaited: the answer says PENDING either way.
   */
  async fund(disbursement: Disbursement): Promise<Disbursement> {
    if (disbursement.state !== "created") return disbursement;
    const items = await this.#store.items(disbursement.id);
    const outcome = await this.#client.fund(disbursement, items);
    this.crashes.reached("after_fund");
    const applied = await this.#store.applyFunding(disbursement.id, outcome, this.#waits, (rows) =>
      rows.map((row) => this.#runner.recordCommand(recordOf(row))),
    );
    this.#logger.info(
      { disbursement_id: disbursement.id, refused: outcome.refused, applied },
      "disbursement funding applied",
    );
    if (applied) this.#credit(outcome.items.filter((i) => i.held).map((i) => i.transfer_id));
    const after = await this.#store.get(disbursement.id);
    assert(after !== null, `disbursement ${disbursement.id} vanished`);
    return after;
  }

  /** Waits for the credits this process is driving (shutdown). */
  async drained(): Promise<void> {
    await Promise.all([...this.#crediting]);
  }

  /** Drives the funded items' credits; one that fails is left to the transfer sweep. */
  #credit(ids: string[]): void {
    if (ids.length === 0) return;
    const run = (async () => {
      const loaded = await this.#saga.getMany(ids);
      await runConcurrently([...loaded.values()], ITEM_CREDITS_CONCURRENCY_MAX, async (item) => {
        await this.#runner.advance(item).catch((error: unknown) => {
          const level = error instanceof InvariantError ? "error" : "warn";
          this.#logger[level](
            { err: error, transfer_id: item.id },
            "item credit failed; the sweep takes it over",
          );
        });
      });
    })().catch((error: unknown) => {
      this.#logger.warn(
        { err: error, count: ids.length },
        "item credits not started; the sweep takes them over",
      );
    });
    this.#crediting.add(run);
    void run.finally(() => this.#crediting.delete(run));
  }
}
