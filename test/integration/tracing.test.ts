/**
 * One trace from the public API through the ledger, Kafka and the record writer and back: the
 * test stack's services export their spans (OTEL_EXPORTER_OTLP_ENDPOINT, set by the stack) to a
 * small OTLP receiver here, and a transfer's spans from every service that touched it share the
 * trace of the traceparent the client sent, its webhook delivery included.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import {
  OtlpKind,
  type OtlpReceiver,
  type ReceivedSpan,
  startOtlpReceiver,
} from "../../packages/tracing/test/otlp-receiver.ts";
import { testOtlpPort } from "../../scripts/stack/env.ts";
import { bearer, call, createUser, settled, uniqueName, urls } from "./api.ts";
import { WebhookReceiver } from "./webhook-receiver.ts";

/** Spans are batched for a second in each service; generous for a loaded machine. */
const SPANS_TIMEOUT_MS = 60_000;

describe("tracing across the services", { timeout: 5 * 60_000 }, () => {
  let receiver: OtlpReceiver | undefined;
  const hooks = new WebhookReceiver();

  before(async () => {
    receiver = await startOtlpReceiver(testOtlpPort);
    await hooks.start();
  });

  after(async () => {
    await receiver?.close();
    await hooks.stop();
  });

  it("carries the client's traceparent through the ledger, the outbox, Kafka and the record writer", async () => {
    const a = await createUser(5_000);
    const b = await createUser(0);
    const registered = await call("POST", `${urls.transaction}/webhooks`, {
      body: { url: `${hooks.url}/b`, events: ["transfer.completed"] },
      headers: bearer(b.token),
    });
    assert.equal(registered.status, 201, JSON.stringify(registered.body));
    hooks.secrets.set("/b", registered.body.data.secret);
    const trace_id = randomBytes(16).toString("hex");
    const answer = await call("POST", `${urls.transaction}/transactions/transfer`, {
      body: { source_user_id: a.id, dest_user_id: b.id, amount: 700 },
      headers: {
        authorization: `Bearer ${a.token}`,
        "idempotency-key": uniqueName("key"),
        traceparent: `00-${trace_id}-${randomBytes(8).toString("hex")}-01`,
      },
    });
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    const id: string = answer.body.data.transaction.id;
    assert.equal((await settled(id, a.token)).status, "COMPLETED");

    const inTrace = (spans: ReceivedSpan[]) => spans.filter((span) => span.trace_id === trace_id);
    const has = (spans: ReceivedSpan[], service: string, name: RegExp) =>
      inTrace(spans).some((span) => span.service === service && name.test(span.name));
    const expected: Array<[string, RegExp]> = [
      ["transaction-service", /^POST \/transactions\/transfer$/],
      ["transaction-service", /^POST \/internal\/transfers\/batch$/],
      ["user-service", /^POST \/internal\/transfers\/batch$/],
      ["transaction-command-service", /transfer\.commands process$/],
      ["transaction-service", /transfer\.events process$/],
      ["transaction-service", /^webhook deliver$/],
    ];
    const spans = await (receiver as OtlpReceiver)
      .waitFor((all) => expected.every(([service, name]) => has(all, service, name)), SPANS_TIMEOUT_MS)
      .catch((error: Error) => {
        const seen = (receiver as OtlpReceiver).spans.map(
          (s) =>
            `${s.service}:${s.name} ${s.trace_id === trace_id ? "in" : "OUT"} ${s.span_id}<-${s.parent_span_id}`,
        );
        throw new Error(`${error.message.split(";")[0]}; trace ${trace_id}: ${seen.join(", ")}`);
      });
    const ours = inTrace(spans);
    // The messages' spans name the transfer; none of them started a trace of its own.
    for (const span of ours.filter((s) => /process$/.test(s.name))) {
      assert.equal(span.attributes.transfer_id, id, `${span.service}: ${span.name}`);
      assert.notEqual(span.parent_span_id, "", `${span.service}: ${span.name} has a parent`);
    }
    // The ledger's step (debit and credit in one) answered inside the trace.
    const ledgerServer = ours.filter((s) => s.service === "user-service");
    assert.ok(ledgerServer.length >= 1, `ledger spans in the trace: ${ledgerServer.length}`);
    // The payee's webhook went out in the trace: a client span, and its traceparent header.
    const deliver = ours.find((s) => s.name === "webhook deliver");
    assert.equal(deliver?.kind, OtlpKind.client);
    assert.equal(deliver?.attributes.transfer_id, id);
    await hooks.until("the payee's webhook", () => hooks.count(`${id}.completed`, "/b") > 0);
    const delivery = hooks.received.find((r) => r.webhook_id === `${id}.completed`);
    assert.equal(delivery?.verified, true);
    assert.equal(delivery?.traceparent?.split("-")[1], trace_id, `traceparent: ${delivery?.traceparent}`);
  });
});
