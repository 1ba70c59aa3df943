/**
 * Webhooks through the public API: endpoints registered by users, `transfer.completed` and
 * `transfer.failed` delivered to payer and payee with valid Standard Webhooks signatures (checked
 * by a receiver on loopback with the `standardwebhooks` library), the delivery log, redelivery
 * with the same webhook-id, secret rotation, deletion, and the SSRF refusals.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import {
  asAdmin,
  bearer,
  call,
  createUser,
  internalUrls,
  settled,
  type TestUser,
  transfer,
  uniqueName,
  urls,
} from "./api.ts";
import { scrapeSample } from "./scrape.ts";
import { type SecondCopy, startSecondCopy } from "./second-copy.ts";
import { WebhookReceiver } from "./webhook-receiver.ts";

const events = ["transfer.completed", "transfer.failed"];

async function register(user: TestUser, url: string, base = urls.transaction) {
  return call("POST", `${base}/webhooks`, { body: { url, events }, headers: bearer(user.token) });
}

describe("webhooks", () => {
  const receiver = new WebhookReceiver();
  let a: TestUser;
  let b: TestUser;
  let endpointA = "";

  before(async () => {
    await receiver.start();
    a = await createUser(10_000);
    b = await createUser(0);
    for (const [user, path] of [
      [a, "/a"],
      [b, "/b"],
    ] as const) {
      const answer = await register(user, `${receiver.url}${path}`);
      assert.equal(answer.status, 201, JSON.stringify(answer.body));
      const { endpoint, secret } = answer.body.data;
      assert.match(secret, /^whsec_[A-Za-z0-9+/=]+$/);
      assert.equal(endpoint.owner_user_id, user.id);
      assert.deepEqual(endpoint.events, events);
      receiver.secrets.set(path, secret);
      if (user === a) endpointA = endpoint.id;
    }
  });

  after(async () => {
    await receiver.stop();
  });

  it("sends transfer.completed to payer and payee, signed, with the public transfer", async () => {
    const delivered = () =>
      scrapeSample(internalUrls.transaction, "dps_webhook_deliveries_total", { result: "delivered" });
    const delivered_before = (await delivered()) ?? 0;
    const sent = await transfer(
      { source_user_id: a.id, dest_user_id: b.id, amount: 700 },
      uniqueName("h"),
      a.token,
    );
    assert.equal(sent.status, 201, JSON.stringify(sent.body));
    const id = sent.body.data.transaction.id;
    await settled(id, a.token);
    const webhook_id = `${id}.completed`;
    await receiver.until(
      "both deliveries",
      () => receiver.count(webhook_id, "/a") > 0 && receiver.count(webhook_id, "/b") > 0,
    );
    for (const delivery of receiver.received.filter((r) => r.webhook_id === webhook_id)) {
      assert.equal(delivery.verified, true, "a valid signature");
      assert.equal(delivery.body.type, "transfer.completed");
      assert.ok(Date.parse(delivery.body.timestamp) > 0);
      const transaction = delivery.body.data.transaction;
      assert.equal(transaction.id, id);
      assert.equal(transaction.status, "COMPLETED");
      assert.equal(transaction.amount, 700);
      assert.equal(transaction.source_init_bal, null, "no balance in a body both parties receive");
      assert.equal(transaction.dest_init_bal, null);
    }
    // Both deliveries are counted (by this copy: no other copy runs yet), once their outcome is
    // recorded, a moment after the receiver answered.
    const deadline = Date.now() + 30_000;
    while (((await delivered()) ?? 0) < delivered_before + 2) {
      assert.ok(Date.now() < deadline, "dps_webhook_deliveries_total counts both deliveries");
      await sleep(100);
    }
  });

  it("sends transfer.failed for a refused transfer", async () => {
    const sent = await transfer(
      { source_user_id: a.id, dest_user_id: b.id, amount: 1_000_000 },
      uniqueName("h"),
      a.token,
    );
    assert.equal(sent.status, 422, JSON.stringify(sent.body));
    const id = sent.body.details.transaction.id;
    const webhook_id = `${id}.failed`;
    await receiver.until(
      "transfer.failed",
      () => receiver.count(webhook_id, "/a") > 0 && receiver.count(webhook_id, "/b") > 0,
    );
    const delivery = receiver.received.find((r) => r.webhook_id === webhook_id);
    assert.equal(delivery?.verified, true);
    assert.equal(delivery?.body.data.transaction.failure_reason, "insufficient_funds");
  });

  it("logs each attempt, redelivers with the same webhook-id, rotates the secret, deletes", async () => {
    const log = await call("GET", `${urls.transaction}/webhooks/${endpointA}/deliveries`, {
      headers: bearer(a.token),
    });
    assert.equal(log.status, 200, JSON.stringify(log.body));
    const [newest] = log.body.data.deliveries;
    assert.equal(newest.state, "delivered");
    assert.equal(newest.attempts[0].status, "succeeded");
    assert.equal(newest.attempts[0].response_code, 200);
    assert.ok(newest.attempts[0].latency_ms >= 0);

    // Only the owner sees or touches an endpoint.
    const theirs = await call("GET", `${urls.transaction}/webhooks/${endpointA}/deliveries`, {
      headers: bearer(b.token),
    });
    assert.equal(theirs.status, 404);

    const rotated = await call("POST", `${urls.transaction}/webhooks/${endpointA}/rotate-secret`, {
      headers: bearer(a.token),
    });
    assert.equal(rotated.status, 200, JSON.stringify(rotated.body));
    assert.notEqual(rotated.body.data.secret, receiver.secrets.get("/a"));
    receiver.secrets.set("/a", rotated.body.data.secret);

    const before = receiver.count(newest.webhook_id, "/a");
    const again = await call(
      "POST",
      `${urls.transaction}/webhooks/${endpointA}/deliveries/${newest.id}/redeliver`,
      {
        headers: bearer(a.token),
      },
    );
    assert.equal(again.status, 202, JSON.stringify(again.body));
    await receiver.until("the redelivery", () => receiver.count(newest.webhook_id, "/a") > before);
    const last = receiver.received
      .filter((r) => r.webhook_id === newest.webhook_id && r.path === "/a")
      .at(-1);
    assert.equal(last?.verified, true, "signed with the new secret");

    const listed = await call("GET", `${urls.transaction}/webhooks`, { headers: bearer(a.token) });
    assert.equal(listed.status, 200);
    assert.equal(listed.body.data.endpoints.length, 1);
    assert.equal(JSON.stringify(listed.body).includes("whsec_"), false, "a listing never shows a secret");

    const deleted = await call("DELETE", `${urls.transaction}/webhooks/${endpointA}`, {
      headers: bearer(a.token),
    });
    assert.equal(deleted.status, 200, JSON.stringify(deleted.body));
    const gone = await call("GET", `${urls.transaction}/webhooks`, { headers: bearer(a.token) });
    assert.equal(gone.body.data.endpoints.length, 0);
  });

  it("refuses bad input with 4xx, and the operator's credential", async () => {
    const bad = [
      { url: `${receiver.url}/x`, events: [] },
      { url: `${receiver.url}/x`, events: ["transfer.lost"] },
      { url: `${receiver.url}/x`, events, extra: 1 },
    ];
    for (const body of bad) {
      const answer = await call("POST", `${urls.transaction}/webhooks`, { body, headers: bearer(a.token) });
      assert.equal(answer.status, 400, JSON.stringify(answer.body));
    }
    const operator = await call("POST", `${urls.transaction}/webhooks`, {
      body: { url: `${receiver.url}/x`, events },
      headers: asAdmin(),
    });
    assert.equal(operator.status, 403, "endpoints belong to users");
    for (const url of ["ftp://example.com/hook", "file:///etc/passwd", "javascript:alert(1)"]) {
      const answer = await register(a, url);
      assert.ok([400, 422].includes(answer.status), `${url}: ${answer.status}`);
    }
  });

  describe("with private addresses refused (WEBHOOK_ALLOW_PRIVATE=false, as in production)", () => {
    let strict: SecondCopy | undefined;
    before(async () => {
      strict = await startSecondCopy({ WEBHOOK_ALLOW_PRIVATE: "false" });
    });
    after(async () => {
      await strict?.stop();
    });

    it("refuses loopback, private, link-local and names that resolve to them", async () => {
      for (const url of [
        receiver.url,
        "http://localhost:8080/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "https://0.0.0.0/hook",
      ]) {
        const answer = await register(a, url, strict?.base);
        assert.equal(answer.status, 422, `${url}: ${JSON.stringify(answer.body)}`);
        assert.equal(answer.body.code, "webhook_url_refused");
      }
      const listed = await call("GET", `${strict?.base}/webhooks`, { headers: bearer(a.token) });
      assert.equal(listed.body.data.endpoints.length, 0, "nothing registered");
    });
  });
});

describe("a batch's final status", () => {
  const receiver = new WebhookReceiver();
  before(() => receiver.start());
  after(() => receiver.stop());

  it("is told by disbursement.completed to the payer and answers a waiting read at once", async () => {
    const payer = await createUser(1_000);
    const payees = [await createUser(0), await createUser(0)];
    const answer = await call("POST", `${urls.transaction}/webhooks`, {
      body: { url: `${receiver.url}/payer`, events: ["disbursement.completed"] },
      headers: bearer(payer.token),
    });
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    receiver.secrets.set("/payer", answer.body.data.secret);
    const items = payees.map((p, i) => ({ dest_user_id: p.id, amount: 100 + i, reference: `item-${i}` }));
    const made = await call("POST", `${urls.transaction}/disbursements`, {
      body: { source_user_id: payer.id, items },
      headers: { ...bearer(payer.token), "idempotency-key": uniqueName("batch") },
    });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    const id: string = made.body.data.disbursement.id;

    // One read held until the batch is final: it answers with the final status and says it waited.
    const started = Date.now();
    const waited = await call("GET", `${urls.transaction}/disbursements/${id}`, {
      headers: { ...bearer(payer.token), prefer: "wait=30" },
    });
    assert.equal(waited.status, 200, JSON.stringify(waited.body));
    assert.equal(waited.body.data.disbursement.status, "COMPLETED");
    assert.equal(waited.headers.get("preference-applied"), "wait=30");
    assert.ok(Date.now() - started < 29_000, "answered when final, not when the wait ran out");

    const webhook_id = `${id}.completed`;
    await receiver.until("the batch's delivery", () => receiver.count(webhook_id, "/payer") > 0);
    const delivery = receiver.received.find((r) => r.webhook_id === webhook_id);
    assert.equal(delivery?.verified, true, "a valid signature");
    assert.equal(delivery?.body.type, "disbursement.completed");
    const batch = delivery?.body.data.disbursement;
    assert.equal(batch.id, id);
    assert.equal(batch.status, "COMPLETED");
    assert.deepEqual(batch.counts, { pending: 0, completed: 2, failed: 0 });
    assert.equal(batch.amount_completed, 201);
  });
});
