/**
 * A batch's webhooks: every item is a transfer and raises its transfer event, including an item
 * refused at funding (an unknown payee, never held), and the batch raises disbursement.completed,
 * in the trace of the request that created the batch.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { bearer, call, createUser, type TestUser, uniqueName, urls } from "./api.ts";
import { WebhookReceiver } from "./webhook-receiver.ts";

const UNKNOWN_USER = 2_000_000_000;

describe("batch webhooks", { timeout: 180_000 }, () => {
  const receiver = new WebhookReceiver();
  let payer: TestUser;

  before(async () => {
    await receiver.start();
    payer = await createUser(1_000);
    const answer = await call("POST", `${urls.transaction}/webhooks`, {
      body: {
        url: `${receiver.url}/payer`,
        events: ["transfer.completed", "transfer.failed", "disbursement.completed"],
      },
      headers: bearer(payer.token),
    });
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    receiver.secrets.set("/payer", answer.body.data.secret);
  });

  after(async () => {
    await receiver.stop();
  });

  it("sends transfer.failed for an item refused at funding, as for every other item", async () => {
    const payee = await createUser();
    const trace_id = randomBytes(16).toString("hex");
    const made = await call("POST", `${urls.transaction}/disbursements`, {
      body: {
        source_user_id: payer.id,
        items: [
          { dest_user_id: payee.id, amount: 100, reference: "paid" },
          { dest_user_id: UNKNOWN_USER, amount: 50, reference: "nobody" },
        ],
      },
      headers: {
        ...bearer(payer.token),
        "idempotency-key": uniqueName("hook"),
        traceparent: `00-${trace_id}-${randomBytes(8).toString("hex")}-01`,
      },
    });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    const id: string = made.body.data.disbursement.id;
    const final = await call("GET", `${urls.transaction}/disbursements/${id}`, {
      headers: { ...bearer(payer.token), prefer: "wait=30" },
    });
    assert.equal(final.body.data.disbursement.status, "PARTIALLY_COMPLETED");
    const items = await call("GET", `${urls.transaction}/disbursements/${id}/items`, {
      headers: bearer(payer.token),
    });
    const byRef = new Map<string, string>(
      items.body.data.items.map((i: { reference: string; id: string }) => [i.reference, i.id]),
    );
    const expected = [`${byRef.get("paid")}.completed`, `${byRef.get("nobody")}.failed`, `${id}.completed`];
    await receiver.until(
      `${expected.join(", ")} at the payer's endpoint`,
      () => expected.every((webhook_id) => receiver.count(webhook_id, "/payer") > 0),
      60_000,
    );
    assert.ok(receiver.received.every((r) => r.verified));
    // Every delivery the batch caused is in the trace of the request that created it.
    for (const webhook_id of expected) {
      const got = receiver.received.find((r) => r.webhook_id === webhook_id);
      assert.equal(got?.traceparent?.split("-")[1], trace_id, `${webhook_id}: ${got?.traceparent}`);
    }
  });
});
