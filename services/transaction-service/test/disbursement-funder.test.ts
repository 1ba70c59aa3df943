/**
 * The funder without engines: after the funding commit it drives the funded items' credits at
 * once (not left to the sweep's next pass), never a refused item's, and stop() can wait for them.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createLogger } from "#packages/log/index.ts";
import type { FundingClient } from "../src/disbursements/funding.ts";
import { DisbursementFunder } from "../src/disbursements/funding.ts";
import type { Disbursement, DisbursementStore, ItemFunding, ItemRow } from "../src/disbursements/store.ts";
import type { SagaRunner } from "../src/saga/runner.ts";
import type { SagaStore, StoredTransfer } from "../src/saga/store.ts";

const NOW = "2026-01-01T00:00:00.000Z";
const idOf = (n: number) => `0190b5a8-0000-7000-8000-${String(n).padStart(12, "0")}`;

const batch: Disbursement = {
  id: idOf(900),
  idempotency_key: "k",
  request_fingerprint: "f",
  source_user_id: 1,
  reference: null,
  state: "created",
  failure_reason: null,
  status: "PENDING",
  item_count: 3,
  total_amount: 30,
  counts: { pending: 3, completed: 0, failed: 0 },
  amount_completed: 0,
  amount_refunded: 0,
  response_status: null,
  response_body: null,
  attempts: 0,
  version: 1,
  created_at: NOW,
  updated_at: NOW,
};

const items: ItemRow[] = [1, 2, 3].map((n) => ({
  id: idOf(n),
  item_index: n - 1,
  dest_user_id: 10 + n,
  amount: 10,
  state: "funding",
}));

function storedItem(id: string): StoredTransfer {
  return {
    id,
    state: "recorded",
    source_user_id: 1,
    dest_user_id: 11,
    amount: 10,
    source_init_bal: 100,
    dest_init_bal: null,
    failure_reason: null,
    created_at: NOW,
    updated_at: NOW,
    idempotency_key: null,
    request_fingerprint: "f",
    response_status: null,
    response_body: null,
    attempts: 0,
  };
}

describe("disbursement funder", () => {
  it("drives the funded items' credits at once, never a refused item's", async () => {
    const funding: ItemFunding[] = [
      { transfer_id: idOf(1), held: true, source_init_bal: 100 },
      { transfer_id: idOf(2), held: false, reason: "dest_not_found" },
      { transfer_id: idOf(3), held: true, source_init_bal: 90 },
    ];
    let applied = false;
    const store = {
      items: async () => items,
      applyFunding: async () => {
        applied = true;
        return true;
      },
      get: async () => ({ ...batch, state: "funded" as const }),
    } as unknown as DisbursementStore;
    const client: Pick<FundingClient, "fund"> = { fund: async () => ({ refused: null, items: funding }) };
    const saga: Pick<SagaStore, "getMany"> = {
      getMany: async (ids) => new Map(ids.map((id) => [id, storedItem(id)])),
    };
    const advanced: string[] = [];
    let release: () => void = () => {};
    const credits_done = new Promise<void>((resolve) => {
      release = resolve;
    });
    const runner = {
      recordCommand: () => ({ topic: "t", key: "k", value: {} }),
      advance: async (item: StoredTransfer) => {
        assert.ok(applied, "a credit only after the funding commit");
        advanced.push(item.id);
        await credits_done;
        return item;
      },
    } as unknown as Pick<SagaRunner, "recordCommand" | "advance">;
    const funder = new DisbursementFunder({
      store,
      saga,
      client,
      runner,
      logger: createLogger("funder-test", "silent"),
      waits: { step_ms: 60_000, record_ms: 60_000 },
    });

    const after = await funder.fund(batch);
    assert.equal(after.state, "funded");
    // Started without waiting for the sweep; the answer did not wait for the credits.
    for (let i = 0; i < 20 && advanced.length < 2; i++) await new Promise((r) => setImmediate(r));
    assert.deepEqual(advanced.sort(), [idOf(1), idOf(3)]);
    let drained = false;
    const draining = funder.drained().then(() => {
      drained = true;
    });
    await new Promise((r) => setImmediate(r));
    assert.equal(drained, false, "stop waits for the credits in flight");
    release();
    await draining;
  });
});
