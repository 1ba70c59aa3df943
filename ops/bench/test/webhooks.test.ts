import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { test } from "node:test";
import { Webhook } from "standardwebhooks";
import { ApiClient } from "../load.ts";
import { eventTime_ms, startWebhookProbe, windowLatency } from "../webhooks.ts";

test("eventTime_ms reads the event's timestamp with microseconds", () => {
  assert.equal(eventTime_ms("2026-12-01T12:00:00.123456Z"), Date.parse("2026-12-01T12:00:00.123Z"));
  assert.ok(Number.isNaN(eventTime_ms(undefined)));
  assert.ok(Number.isNaN(eventTime_ms("yesterday")));
});

test("windowLatency counts only the events that became final in the window", () => {
  const arrivals = [
    { final_at_ms: 1_000, latency_ms: 10 },
    { final_at_ms: 2_000, latency_ms: 20 },
    { final_at_ms: 2_500, latency_ms: 400 },
    { final_at_ms: 3_000, latency_ms: 9_000 },
  ];
  const window = windowLatency(arrivals, 2_000, 3_000);
  assert.equal(window.count, 2);
  assert.ok(window.p50_ms >= 19 && window.p50_ms <= 21, String(window.p50_ms));
  assert.ok(window.max_ms >= 399 && window.max_ms <= 401, String(window.max_ms));
});

test("the probe registers endpoints, times signed deliveries once per event and refuses bad signatures", async () => {
  const secret = `whsec_${randomBytes(32).toString("base64")}`;
  const registered: string[] = [];
  const api_server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on("data", (c: Buffer) => chunks.push(c));
    request.on("end", () => {
      registered.push(JSON.parse(Buffer.concat(chunks).toString("utf8")).url);
      response.writeHead(201, { "content-type": "application/json" });
      response.end(JSON.stringify({ success: true, data: { secret, endpoint: {} } }));
    });
  });
  await new Promise<void>((resolve) => api_server.listen(0, "127.0.0.1", resolve));
  const api = new ApiClient(`http://127.0.0.1:${(api_server.address() as AddressInfo).port}`, 4, 5_000);
  const probe = await startWebhookProbe({ api, tokenFor: async () => "token", user_ids: [7, 8] });
  try {
    assert.equal(registered.length, 2);
    const send = async (url: string, id: string, final_at: Date, key = secret) => {
      const payload = JSON.stringify({
        type: "transfer.completed",
        timestamp: final_at.toISOString(),
        data: {},
      });
      const now = new Date();
      const signature = new Webhook(key).sign(id, now, payload);
      const answer = await fetch(url, {
        method: "POST",
        body: payload,
        headers: {
          "webhook-id": id,
          "webhook-timestamp": String(Math.floor(now.getTime() / 1000)),
          "webhook-signature": signature,
        },
      });
      return answer.status;
    };
    const t0 = Date.now();
    const final_at = new Date(t0 - 50);
    assert.equal(await send(registered[0] ?? "", "evt_1", final_at), 204);
    assert.equal(await send(registered[1] ?? "", "evt_1", final_at), 204, "the payee's copy");
    const other = `whsec_${randomBytes(32).toString("base64")}`;
    assert.equal(await send(registered[0] ?? "", "evt_2", final_at, other), 400);
    assert.equal(probe.unverified, 1);
    const latency = probe.latencyBetween(t0 - 1_000, t0 + 1_000);
    assert.equal(latency.count, 1, "one event, counted once");
    assert.ok(latency.p99_ms >= 49 && latency.p99_ms < 5_000, String(latency.p99_ms));
  } finally {
    await probe.close();
    api.close();
    api_server.close();
  }
});
