/**
 * Batch disbursements through the public API: funding all or nothing, each item an ordinary
 * transfer, the batch's status derived from its items, replay and bad input, pages and privacy.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { batchLoop, itemsFor } from "../../ops/bench/batches.ts";
import { ApiClient } from "../../ops/bench/load.ts";
import {
  type Answer,
  asAdmin,
  balanceOf,
  bearer,
  call,
  createUser,
  ledgerAudit,
  settled,
  type TestUser,
  uniqueName,
  urls,
} from "./api.ts";

const UNKNOWN_USER = 2_000_000_000;

type Item = { dest_user_id: number; amount: number; reference: string };

function disburse(
  payer: TestUser,
  items: Item[],
  key: string | null = uniqueName("d"),
  extra = {},
): Promise<Answer> {
  return call("POST", `${urls.transaction}/disbursements`, {
    body: { source_user_id: payer.id, items, ...extra },
    headers: key === null ? bearer(payer.token) : { ...bearer(payer.token), "idempotency-key": key },
  });
}

// biome-ignore lint/suspicious/noExplicitAny: free-form JSON
async function final(id: string, token: string, timeout_ms = 90_000): Promise<any> {
  const deadline = Date.now() + timeout_ms;
  for (;;) {
    const answer = await call("GET", `${urls.transaction}/disbursements/${id}`, { headers: bearer(token) });
    // A busy shared machine may make the token check time out (503): a poll just tries again.
    if (answer.status !== 503) {
      assert.equal(answer.status, 200, JSON.stringify(answer.body));
      const d = answer.body.data.disbursement;
      if (d.status !== "PENDING") return d;
    }
    if (Date.now() > deadline)
      assert.fail(`disbursement ${id} still PENDING after ${timeout_ms} ms: ${JSON.stringify(answer.body)}`);
    await sleep(200);
  }
}

// biome-ignore lint/suspicious/noExplicitAny: free-form JSON
async function allItems(id: string, token: string, query = ""): Promise<any[]> {
  const items = [];
  let cursor: string | null = null;
  for (let pages = 0; pages < 50; pages++) {
    const q = `limit=100${query}${cursor === null ? "" : `&cursor=${cursor}`}`;
    const answer = await call("GET", `${urls.transaction}/disbursements/${id}/items?${q}`, {
      headers: bearer(token),
    });
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    items.push(...answer.body.data.items);
    cursor = answer.body.data.pagination.next_cursor;
    if (cursor === null) return items;
  }
  assert.fail("too many pages");
}

async function assertLedgerConsistent(): Promise<void> {
  const report = await ledgerAudit();
  assert.equal(report.consistent, true, JSON.stringify(report));
}

describe("batch disbursements", () => {
  it("pays 1,000 items funded in one commit; every item completes and the batch says so", async () => {
    const payer = await createUser(1_000_000);
    const payees = await Promise.all(Array.from({ length: 10 }, () => createUser()));
    const items = Array.from({ length: 1_000 }, (_, i) => ({
      dest_user_id: (payees[i % 10] as TestUser).id,
      amount: 100 + (i % 7),
      reference: `pay-${i}`,
    }));
    const total = items.reduce((sum, i) => sum + i.amount, 0);
    const answer = await disburse(payer, items, uniqueName("big"), { reference: "payroll 2026-12" });
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    const created = answer.body.data.disbursement;
    assert.equal(created.item_count, 1_000);
    assert.equal(created.total_amount, total);
    assert.equal(created.reference, "payroll 2026-12");
    // Funded at once: the whole total is out of the payer's wallet before any item is credited.
    assert.ok((await balanceOf(payer.id)) <= 1_000_000 - total + created.amount_completed);
    const done = await final(created.id, payer.token, 180_000);
    assert.equal(done.status, "COMPLETED");
    assert.deepEqual(done.counts, { pending: 0, completed: 1_000, failed: 0 });
    assert.equal(done.amount_completed, total);
    assert.equal(done.amount_refunded, 0);
    assert.equal(await balanceOf(payer.id), 1_000_000 - total);
    const received = await Promise.all(payees.map((p) => balanceOf(p.id)));
    assert.equal(
      received.reduce((a, b) => a + b, 0),
      total,
    );
    const listed = await allItems(created.id, payer.token);
    assert.equal(listed.length, 1_000);
    assert.deepEqual(
      listed.slice(0, 3).map((i) => i.reference),
      ["pay-0", "pay-1", "pay-2"],
    );
    assert.ok(listed.every((i) => i.status === "COMPLETED" && i.disbursement_id === created.id));
    await assertLedgerConsistent();
  });

  it("refuses the whole batch with the total when the wallet is short, and moves nothing", async () => {
    const payer = await createUser(500);
    const payee = await createUser();
    const answer = await disburse(payer, [
      { dest_user_id: payee.id, amount: 300, reference: "a" },
      { dest_user_id: payee.id, amount: 300, reference: "b" },
    ]);
    assert.equal(answer.status, 422, JSON.stringify(answer.body));
    assert.equal(answer.body.code, "insufficient_funds");
    assert.equal(answer.body.details.total_amount, 600);
    assert.match(answer.body.message, /600/);
    assert.equal(await balanceOf(payer.id), 500);
    assert.equal(await balanceOf(payee.id), 0);
    const d = await final(answer.body.details.disbursement.id, payer.token);
    assert.equal(d.status, "FAILED");
    assert.equal(d.counts.failed, 2);
    await assertLedgerConsistent();
  });

  it("an unknown or closed payee's item fails on its own; the rest complete (PARTIALLY_COMPLETED)", async () => {
    const payer = await createUser(1_000);
    const payee = await createUser();
    const closing = await createUser();
    const closed = await call("DELETE", `${urls.user}/users/${closing.id}`, { headers: asAdmin() });
    assert.equal(closed.status, 200, JSON.stringify(closed.body));
    const answer = await disburse(payer, [
      { dest_user_id: payee.id, amount: 100, reference: "ok-1" },
      { dest_user_id: UNKNOWN_USER, amount: 200, reference: "nobody" },
      { dest_user_id: closing.id, amount: 300, reference: "closed" },
      { dest_user_id: payee.id, amount: 50, reference: "ok-2" },
    ]);
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    const d = await final(answer.body.data.disbursement.id, payer.token);
    assert.equal(d.status, "PARTIALLY_COMPLETED");
    assert.deepEqual(d.counts, { pending: 0, completed: 2, failed: 2 });
    assert.equal(d.amount_completed, 150);
    assert.equal(d.amount_refunded, 500);
    assert.equal(await balanceOf(payer.id), 850);
    assert.equal(await balanceOf(payee.id), 150);
    const failed = await allItems(d.id, payer.token, "&status=FAILED");
    assert.deepEqual(
      failed.map((i) => [i.reference, i.failure_reason]),
      [
        ["nobody", "dest_not_found"],
        ["closed", "dest_not_found"],
      ],
    );
    // The payee sees their item as an ordinary transfer.
    const completed = await allItems(d.id, payer.token, "&status=COMPLETED");
    const seen = await settled(completed[0].id, payee.token);
    assert.equal(seen.status, "COMPLETED");
    assert.equal(seen.amount, 100);
    await assertLedgerConsistent();
  });

  it("a batch whose every payee is unknown ends FAILED, every amount back with the payer", async () => {
    const payer = await createUser(1_000);
    const answer = await disburse(payer, [
      { dest_user_id: UNKNOWN_USER, amount: 100, reference: "x" },
      { dest_user_id: UNKNOWN_USER - 1, amount: 200, reference: "y" },
    ]);
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    const d = await final(answer.body.data.disbursement.id, payer.token);
    assert.equal(d.status, "FAILED");
    assert.equal(d.amount_refunded, 300);
    assert.equal(await balanceOf(payer.id), 1_000);
  });

  it("replays a key's first answer; the same key with another body is 422", async () => {
    const payer = await createUser(1_000);
    const payee = await createUser();
    const key = uniqueName("replay");
    const items = [{ dest_user_id: payee.id, amount: 10, reference: "r" }];
    const first = await disburse(payer, items, key);
    assert.equal(first.status, 201, JSON.stringify(first.body));
    const again = await disburse(payer, items, key);
    assert.equal(again.status, 201);
    assert.equal(again.headers.get("idempotent-replayed"), "true");
    assert.deepEqual(again.body, first.body);
    const other = await disburse(payer, [{ ...items[0], amount: 11 } as Item], key);
    assert.equal(other.status, 422, JSON.stringify(other.body));
    assert.equal(other.body.code, "idempotency_key_reused");
    await final(first.body.data.disbursement.id, payer.token);
    assert.equal(await balanceOf(payer.id), 990);
  });

  it("answers bad input with 4xx naming the item, and moves nothing", async () => {
    const payer = await createUser(1_000);
    const payee = await createUser();
    const good = { dest_user_id: payee.id, amount: 10, reference: "a" };
    const cases: Array<[string, Promise<Answer>, number, RegExp]> = [
      ["no items", disburse(payer, []), 400, /items/],
      [
        "1,001 items",
        disburse(
          payer,
          Array.from({ length: 1_001 }, (_, i) => ({ ...good, amount: 1, reference: `r${i}` })),
        ),
        400,
        /items/,
      ],
      ["duplicate reference", disburse(payer, [good, { ...good }]), 422, /items\.1\.reference/],
      [
        "zero amount",
        disburse(payer, [good, { ...good, reference: "b", amount: 0 }]),
        400,
        /items\.1\.amount/,
      ],
      ["fractional amount", disburse(payer, [{ ...good, amount: 1.5 }]), 400, /items\.0\.amount/],
      [
        "total over 2^53-1",
        disburse(payer, [
          { ...good, amount: Number.MAX_SAFE_INTEGER },
          { ...good, reference: "b", amount: 1 },
        ]),
        422,
        /total/,
      ],
      [
        "payer as payee",
        disburse(payer, [good, { ...good, reference: "b", dest_user_id: payer.id }]),
        422,
        /items\.1\.dest_user_id/,
      ],
      ["unknown item field", disburse(payer, [{ ...good, note: "x" } as Item]), 400, /items\.0/],
      ["unknown field", disburse(payer, [good], uniqueName("k"), { memo: "x" }), 400, /memo|unrecognized/i],
      ["empty reference", disburse(payer, [{ ...good, reference: "" }]), 400, /items\.0\.reference/],
      ["missing key", disburse(payer, [good], null), 400, /idempotency-key/i],
    ];
    for (const [name, pending, status, message] of cases) {
      const answer = await pending;
      assert.equal(answer.status, status, `${name}: ${JSON.stringify(answer.body).slice(0, 300)}`);
      assert.match(answer.body.message, message, name);
    }
    const other = await createUser(1_000);
    const foreign = await call("POST", `${urls.transaction}/disbursements`, {
      body: { source_user_id: other.id, items: [good] },
      headers: { ...bearer(payer.token), "idempotency-key": uniqueName("k") },
    });
    assert.equal(foreign.status, 403);
    assert.equal(await balanceOf(payer.id), 1_000);
    assert.equal(await balanceOf(other.id), 1_000);
    const listed = await call("GET", `${urls.transaction}/disbursements`, { headers: bearer(payer.token) });
    assert.equal(listed.body.data.disbursements.length, 0);
  });

  it("pages the payer's batches newest first, and keeps them and their balances private", async () => {
    const payer = await createUser(1_000);
    const payee = await createUser();
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const answer = await disburse(payer, [{ dest_user_id: payee.id, amount: 1, reference: `p${i}` }]);
      assert.equal(answer.status, 201);
      ids.push(answer.body.data.disbursement.id);
    }
    // The list is read from the batch records, which trail a fresh POST by one record write.
    const newest = ids[2] as string;
    for (const deadline = Date.now() + 30_000; ; ) {
      const first = await call("GET", `${urls.transaction}/disbursements?limit=1`, {
        headers: bearer(payer.token),
      });
      if (first.status === 200 && first.body.data.disbursements[0]?.id === newest) break;
      assert.ok(Date.now() < deadline, `the newest batch is not listed: ${JSON.stringify(first.body)}`);
      await sleep(200);
    }
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const q: string = cursor === null ? "limit=2" : `limit=2&cursor=${cursor}`;
      const page = await call("GET", `${urls.transaction}/disbursements?${q}`, {
        headers: bearer(payer.token),
      });
      assert.equal(page.status, 200, JSON.stringify(page.body));
      seen.push(...page.body.data.disbursements.map((d: { id: string }) => d.id));
      cursor = page.body.data.pagination.next_cursor;
    } while (cursor !== null);
    assert.deepEqual(seen, [...ids].reverse());
    // A well-formed cursor of another list is refused, not a 500.
    const foreign = Buffer.from(JSON.stringify({ t: new Date().toISOString(), id: "12345" })).toString(
      "base64url",
    );
    const wrong = await call("GET", `${urls.transaction}/disbursements?cursor=${foreign}`, {
      headers: bearer(payer.token),
    });
    assert.equal(wrong.status, 400, JSON.stringify(wrong.body));
    const id = ids[0] as string;
    await final(id, payer.token);
    // The payee reads neither the batch nor its items; the payer's items hide the payee's balance.
    const theirs = await call("GET", `${urls.transaction}/disbursements/${id}`, {
      headers: bearer(payee.token),
    });
    assert.equal(theirs.status, 403);
    const theirItems = await call("GET", `${urls.transaction}/disbursements/${id}/items`, {
      headers: bearer(payee.token),
    });
    assert.equal(theirItems.status, 403);
    const [item] = await allItems(id, payer.token);
    assert.equal(item.status, "COMPLETED");
    assert.equal(item.dest_init_bal, null);
    assert.equal(typeof item.source_init_bal, "number");
    const asPayee = await settled(item.id, payee.token);
    assert.equal(asPayee.source_init_bal, null);
    const admin = await call("GET", `${urls.transaction}/disbursements/${id}/items`, { headers: asAdmin() });
    assert.equal(typeof admin.body.data.items[0].dest_init_bal, "number");
    const missing = await call(
      "GET",
      `${urls.transaction}/disbursements/00000000-0000-7000-8000-000000000000`,
      {
        headers: bearer(payer.token),
      },
    );
    assert.equal(missing.status, 404);
  });

  it("the benchmark's batch workload completes batches and counts their items (a tiny smoke)", async () => {
    const users = await Promise.all([createUser(1_000_000), createUser(1_000_000), createUser(1_000_000)]);
    const sample = itemsFor(
      users.map((u) => u.id),
      1,
      50,
      10,
    );
    assert.equal(sample.items.length, 50);
    assert.ok(sample.items.every((i) => i.dest_user_id !== sample.payer && i.amount >= 1 && i.amount <= 10));
    const tokens = new Map(users.map((u) => [u.id, u.token]));
    const api = new ApiClient(urls.transaction, 4, 30_000);
    try {
      const result = await batchLoop(
        {
          api,
          tokenFor: async (id) => tokens.get(id) ?? "",
          amount_max_minor: 10,
          final_timeout_ms: 60_000,
        },
        users.map((u) => u.id),
        { batch_size: 20, concurrency: 1, duration_s: 1, wait_s: 1 },
      );
      assert.ok(result.batches_final >= 1, JSON.stringify(result));
      assert.equal(result.errors, 0, JSON.stringify(result));
      assert.equal(result.items_completed, result.batches_final * 20);
      assert.ok(result.batch_tps > 0);
    } finally {
      api.close();
    }
    await assertLedgerConsistent();
  });
});
