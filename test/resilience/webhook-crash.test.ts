/**
 * SIGKILL of transaction-service during a webhook delivery: the receiver has answered, the
 * outcome is not recorded (crash point after_webhook_send). The supervisor restarts the service;
 * once the delivery's lease ends it is sent again with the same webhook-id, and afterwards every
 * event reached every endpoint at least once with a valid signature, and the money is right.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import {
  asAdmin,
  balanceOf,
  bearer,
  call,
  createUser,
  internalUrls,
  ledgerAudit,
  settled,
  type TestUser,
  transfer,
  uniqueName,
  urls,
} from "../integration/api.ts";
import { healthy } from "../integration/second-copy.ts";
import { WebhookReceiver } from "../integration/webhook-receiver.ts";

describe("webhook delivery through a crash", { timeout: 300_000 }, () => {
  const receiver = new WebhookReceiver();
  let a: TestUser;
  let b: TestUser;
  const endpoints = new Map<string, string>();

  before(async () => {
    await receiver.start();
    a = await createUser(1_000);
    b = await createUser(0);
    for (const [user, path] of [
      [a, "/a"],
      [b, "/b"],
    ] as const) {
      const answer = await call("POST", `${urls.transaction}/webhooks`, {
        body: { url: `${receiver.url}${path}`, events: ["transfer.completed", "transfer.failed"] },
        headers: bearer(user.token),
      });
      assert.equal(answer.status, 201, JSON.stringify(answer.body));
      receiver.secrets.set(path, answer.body.data.secret);
      endpoints.set(path, answer.body.data.endpoint.id);
    }
  });

  after(async () => {
    await receiver.stop();
  });

  it("re-sends a delivery whose sender died before recording it; every event arrives signed", async () => {
    const armed = await call("PUT", `${internalUrls.transaction}/ops/crash`, {
      body: { point: "after_webhook_send" },
      headers: asAdmin(),
    });
    assert.equal(armed.status, 200, JSON.stringify(armed.body));
    const ids: string[] = [];
    for (const amount of [100, 200, 5_000]) {
      // The first delivery may kill the service during a later POST: retried as a careful client
      // does, with the same key, once the service is back, and again while the first attempt's
      // transfer is still in progress (409 request_in_progress) until the sweep has driven it.
      const key = uniqueName("k");
      const send = () => transfer({ source_user_id: a.id, dest_user_id: b.id, amount }, key, a.token);
      let sent = await send().catch(async () => {
        await healthy(urls.transaction);
        return send();
      });
      for (let retry = 0; sent.status === 409 && retry < 60; retry++) {
        assert.equal(sent.body.code, "request_in_progress", JSON.stringify(sent.body));
        await sleep(500);
        sent = await send();
      }
      assert.ok([201, 422].includes(sent.status), JSON.stringify(sent.body));
      ids.push(sent.status === 201 ? sent.body.data.transaction.id : sent.body.details.transaction.id);
    }
    // The first delivery sent killed the service: it comes back, and so do the deliveries.
    await sleep(1_000);
    await healthy(urls.transaction);
    const expected = [`${ids[0]}.completed`, `${ids[1]}.completed`, `${ids[2]}.failed`];
    for (const id of ids) await settled(id, a.token, 60_000);
    await receiver.until(
      "every event at every endpoint",
      () => expected.every((id) => receiver.count(id, "/a") > 0 && receiver.count(id, "/b") > 0),
      120_000,
    );
    // The killed attempt is sent again after its lease (same webhook-id) and then recorded.
    await receiver.until(
      "a re-sent delivery",
      () => receiver.received.some((r) => receiver.count(r.webhook_id, r.path) > 1),
      120_000,
    );
    assert.ok(
      receiver.received.every((r) => r.verified),
      "every delivery carries a valid signature",
    );
    for (const [path, user] of [
      ["/a", a],
      ["/b", b],
    ] as const) {
      const deadline = Date.now() + 60_000;
      for (;;) {
        const log = await call("GET", `${urls.transaction}/webhooks/${endpoints.get(path)}/deliveries`, {
          headers: bearer(user.token),
        });
        assert.equal(log.status, 200, JSON.stringify(log.body));
        const states = log.body.data.deliveries.map((d: { state: string }) => d.state);
        if (states.length === 3 && states.every((s: string) => s === "delivered")) break;
        if (Date.now() > deadline) assert.fail(`${path}: deliveries ${JSON.stringify(states)}`);
        await sleep(500);
      }
    }
    assert.equal(await balanceOf(a.id), 700);
    assert.equal(await balanceOf(b.id), 300);
    const audit = await ledgerAudit();
    assert.equal(audit.consistent, true, JSON.stringify(audit));
  });
});
