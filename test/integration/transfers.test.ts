/**
 * The transfer saga end to end, through the public HTTP API, on the real engines.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  balanceOf,
  bearer,
  call,
  createUser,
  internalUrls,
  ledgerAudit,
  recordIn,
  settled,
  transfer,
  uniqueName,
  urls,
} from "./api.ts";

describe("transfers", () => {
  it("every service reports its engines healthy", async () => {
    for (const base of Object.values(internalUrls)) {
      const answer = await call("GET", `${base}/health`);
      assert.equal(answer.status, 200, `${base}: ${JSON.stringify(answer.body)}`);
      assert.equal(answer.body.data.healthy, true);
    }
  });

  it("moves money from A to B and completes with the seed's fields", async () => {
    const a = await createUser(10_000);
    const b = await createUser(300);
    const answer = await transfer(
      { source_user_id: a.id, dest_user_id: b.id, amount: 2_500 },
      uniqueName("key"),
      a.token,
    );
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    assert.equal(answer.body.success, true);
    const created = answer.body.data.transaction;
    // The request debits and credits before it answers: its answer is already final.
    assert.equal(created.status, "COMPLETED");
    assert.equal(created.source_init_bal, 10_000);
    assert.equal(created.dest_init_bal, null, "the payee's balance is not the payer's to see");

    const done = await settled(created.id, a.token);
    assert.equal(done.status, "COMPLETED");
    assert.equal(done.amount, 2_500);
    assert.equal(done.source_user_id, a.id);
    assert.equal(done.dest_user_id, b.id);
    assert.equal(done.source_init_bal, 10_000);
    assert.equal(done.dest_init_bal, null, "the payee's balance is not the payer's to see");
    assert.equal(done.failure_reason, null);
    for (const field of ["created_at", "updated_at"]) assert.ok(Date.parse(done[field]) > 0, field);

    assert.equal(await balanceOf(a.id), 7_500);
    assert.equal(await balanceOf(b.id), 2_800);

    // The payee reads it too (with their own balance only), and the record reached the read side (MongoDB).
    const seenByPayee = await settled(created.id, b.token);
    assert.equal(seenByPayee.status, "COMPLETED");
    assert.equal(seenByPayee.source_init_bal, null);
    assert.equal(seenByPayee.dest_init_bal, 300);
    const record = await recordIn(created.id, "COMPLETED");
    assert.equal(record.amount, 2_500);
  });

  it("refuses a transfer beyond the balance: FAILED insufficient_funds, no money moved", async () => {
    const a = await createUser(100);
    const b = await createUser(0);
    const answer = await transfer(
      { source_user_id: a.id, dest_user_id: b.id, amount: 101 },
      undefined,
      a.token,
    );
    assert.equal(answer.status, 422, JSON.stringify(answer.body));
    assert.equal(answer.body.success, false);
    assert.equal(answer.body.code, "insufficient_funds");
    assert.match(answer.body.message, /insufficient funds/);
    const failed = answer.body.details.transaction;
    assert.equal(failed.status, "FAILED");
    assert.equal(failed.failure_reason, "insufficient_funds");
    assert.equal(failed.source_init_bal, null);
    assert.equal((await settled(failed.id, a.token)).status, "FAILED");
    assert.equal(await balanceOf(a.id), 100);
    assert.equal(await balanceOf(b.id), 0);
  });

  it("answers 404 for an unknown payer or payee and moves nothing", async () => {
    const a = await createUser(1_000);
    const missing = 9_000_000_000_000;
    const toNowhere = await transfer(
      { source_user_id: a.id, dest_user_id: missing, amount: 10 },
      undefined,
      a.token,
    );
    assert.equal(toNowhere.status, 404, JSON.stringify(toNowhere.body));
    assert.equal(toNowhere.body.code, "dest_not_found");
    // Only an owner may pay, so an unknown payer is one whose wallet closed while their token lives.
    const gone = await createUser(0);
    const closed = await call("DELETE", `${urls.user}/users/${gone.id}`, { headers: bearer(gone.token) });
    assert.equal(closed.status, 200, JSON.stringify(closed.body));
    const fromNowhere = await transfer(
      { source_user_id: gone.id, dest_user_id: a.id, amount: 10 },
      undefined,
      gone.token,
    );
    assert.equal(fromNowhere.status, 404, JSON.stringify(fromNowhere.body));
    assert.equal(fromNowhere.body.code, "source_not_found");
    assert.equal(await balanceOf(a.id), 1_000);
  });

  it("refuses a transfer to oneself before anything happens", async () => {
    const a = await createUser(1_000);
    const answer = await transfer(
      { source_user_id: a.id, dest_user_id: a.id, amount: 10 },
      undefined,
      a.token,
    );
    assert.equal(answer.status, 422);
    assert.equal(answer.body.code, "same_wallet");
    const list = await call("GET", `${urls.transaction}/transactions/user/${a.id}`, {
      headers: bearer(a.token),
    });
    assert.equal(list.body.data.transactions.length, 0);
    assert.equal(await balanceOf(a.id), 1_000);
  });

  it("answers bad input with 400 and a message naming the field", async () => {
    const a = await createUser(1_000);
    const b = await createUser(0);
    const bad: unknown[] = [
      { source_user_id: a.id, dest_user_id: b.id, amount: 0 },
      { source_user_id: a.id, dest_user_id: b.id, amount: -5 },
      { source_user_id: a.id, dest_user_id: b.id, amount: 1.5 },
      { source_user_id: a.id, dest_user_id: b.id, amount: "10" },
      { source_user_id: a.id, dest_user_id: b.id, amount: 2 ** 53 },
      { source_user_id: a.id, dest_user_id: b.id },
      { source_user_id: "1; DROP TABLE users", dest_user_id: b.id, amount: 1 },
      { source_user_id: a.id, dest_user_id: b.id, amount: 1, extra: true },
    ];
    for (const body of bad) {
      const answer = await transfer(body, undefined, a.token);
      assert.equal(
        answer.status,
        400,
        `${JSON.stringify(body)} -> ${answer.status} ${JSON.stringify(answer.body)}`,
      );
      assert.equal(answer.body.success, false);
      assert.ok(answer.body.message.length > 0);
    }
    const notJson = await call("POST", `${urls.transaction}/transactions/transfer`, {
      raw: "{not json",
      headers: bearer(a.token),
    });
    assert.equal(notJson.status, 400);
    const badId = await call("GET", `${urls.transaction}/transactions/not-a-uuid`, {
      headers: bearer(a.token),
    });
    assert.equal(badId.status, 400);
    const unknownId = await call(
      "GET",
      `${urls.transaction}/transactions/0190b5a8-0000-7000-8000-000000000000`,
      {
        headers: bearer(a.token),
      },
    );
    assert.equal(unknownId.status, 404);
    assert.equal(await balanceOf(a.id), 1_000);
  });

  it("refunds A when B cannot be credited", async () => {
    const a = await createUser(1_000);
    const b = await createUser(Number.MAX_SAFE_INTEGER - 5);
    const answer = await transfer(
      { source_user_id: a.id, dest_user_id: b.id, amount: 10 },
      undefined,
      a.token,
    );
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    const done = await settled(answer.body.data.transaction.id, a.token);
    assert.equal(done.status, "FAILED");
    assert.equal(done.failure_reason, "dest_unavailable");
    assert.equal(await balanceOf(a.id), 1_000);
    assert.equal(await balanceOf(b.id), Number.MAX_SAFE_INTEGER - 5);
  });

  it("shows a cached transfer's new status as soon as it changes", async () => {
    const a = await createUser(1_000);
    const b = await createUser(0);
    const answer = await transfer(
      { source_user_id: a.id, dest_user_id: b.id, amount: 1 },
      undefined,
      a.token,
    );
    const id = answer.body.data.transaction.id;
    // Read repeatedly while it is in flight, so a PENDING copy is likely cached; it must not stick.
    for (let i = 0; i < 5; i++)
      await call("GET", `${urls.transaction}/transactions/${id}`, { headers: bearer(a.token) });
    const done = await settled(id, a.token, 10_000);
    assert.equal(done.status, "COMPLETED");
    const again = await call("GET", `${urls.transaction}/transactions/${id}`, { headers: bearer(a.token) });
    assert.equal(again.body.data.transaction.status, "COMPLETED");
  });

  it("lists a user's transfers newest first, paginated without gaps or repeats", async () => {
    const a = await createUser(1_000);
    const b = await createUser(0);
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const answer = await transfer(
        { source_user_id: a.id, dest_user_id: b.id, amount: 1 + i },
        undefined,
        a.token,
      );
      ids.push(answer.body.data.transaction.id);
    }
    // The list is the read side's: a transfer is in it once its record is written, which can
    // come a moment after the transfer reads final.
    for (const id of ids) await recordIn(id, (await settled(id, b.token)).status);
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const query: string = cursor === null ? "limit=2" : `limit=2&cursor=${cursor}`;
      const page = await call("GET", `${urls.transaction}/transactions/user/${b.id}?${query}`, {
        headers: bearer(b.token),
      });
      assert.equal(page.status, 200, JSON.stringify(page.body));
      assert.ok(page.body.data.transactions.length <= 2);
      seen.push(...page.body.data.transactions.map((t: { id: string }) => t.id));
      cursor = page.body.data.pagination.next_cursor;
    } while (cursor !== null);
    assert.deepEqual(seen, [...ids].reverse());
    const badLimit = await call("GET", `${urls.transaction}/transactions/user/${b.id}?limit=1000`, {
      headers: bearer(b.token),
    });
    assert.equal(badLimit.status, 400);
    const badCursor = await call("GET", `${urls.transaction}/transactions/user/${b.id}?cursor=nonsense`, {
      headers: bearer(b.token),
    });
    assert.equal(badCursor.status, 400);
  });

  it("never creates or loses money across all of the above (ledger audit)", async () => {
    const audit = await ledgerAudit();
    assert.equal(audit.consistent, true, JSON.stringify(audit));
    assert.equal(audit.sum_all_entries, "0");
    assert.equal(audit.negative_wallets, 0);
    assert.deepEqual(audit.wallets_mismatching_journal, []);
    assert.equal(audit.clearing_balance, audit.held_amount);
  });
});

describe("idempotency keys", () => {
  it("replays the original response for the same key and body", async () => {
    const a = await createUser(1_000);
    const b = await createUser(0);
    const key = uniqueName("key");
    const body = { source_user_id: a.id, dest_user_id: b.id, amount: 100 };
    const first = await transfer(body, key, a.token);
    assert.equal(first.status, 201);
    await settled(first.body.data.transaction.id, a.token);
    const second = await transfer(body, key, a.token);
    assert.equal(second.status, first.status);
    assert.equal(second.headers.get("idempotent-replayed"), "true");
    assert.deepEqual(second.body, first.body);
    assert.equal(await balanceOf(a.id), 900);
  });

  it("refuses the same key with a different body", async () => {
    const a = await createUser(1_000);
    const b = await createUser(0);
    const key = uniqueName("key");
    const first = await transfer({ source_user_id: a.id, dest_user_id: b.id, amount: 100 }, key, a.token);
    assert.equal(first.status, 201);
    const other = await transfer({ source_user_id: a.id, dest_user_id: b.id, amount: 101 }, key, a.token);
    assert.equal(other.status, 422);
    assert.equal(other.body.code, "idempotency_key_reused");
    await settled(first.body.data.transaction.id, a.token);
    assert.equal(await balanceOf(a.id), 900);
  });

  it("makes one transfer out of concurrent requests with one key", async () => {
    const a = await createUser(1_000);
    const b = await createUser(0);
    const key = uniqueName("key");
    const body = { source_user_id: a.id, dest_user_id: b.id, amount: 250 };
    const answers = await Promise.all(Array.from({ length: 12 }, () => transfer(body, key, a.token)));
    const ids = new Set(answers.filter((x) => x.status === 201).map((x) => x.body.data.transaction.id));
    assert.equal(ids.size, 1, JSON.stringify(answers.map((x) => [x.status, x.body])));
    for (const answer of answers) assert.ok([201, 409].includes(answer.status), `${answer.status}`);
    await settled([...ids][0] as string, a.token);
    assert.equal(await balanceOf(a.id), 750);
    assert.equal(await balanceOf(b.id), 250);
  });

  it("gives requests without a key a fresh transfer each time", async () => {
    const a = await createUser(1_000);
    const b = await createUser(0);
    const body = { source_user_id: a.id, dest_user_id: b.id, amount: 100 };
    const one = await transfer(body, undefined, a.token);
    const two = await transfer(body, undefined, a.token);
    assert.notEqual(one.body.data.transaction.id, two.body.data.transaction.id);
    await settled(one.body.data.transaction.id, a.token);
    await settled(two.body.data.transaction.id, a.token);
    assert.equal(await balanceOf(a.id), 800);
  });
});
