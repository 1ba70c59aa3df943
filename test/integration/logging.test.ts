/**
 * Every log line about a transfer carries its trace_id, tracing on or off: a copy of
 * transaction-service with no OTLP endpoint (and debug lines, so that it writes some about the
 * transfer) takes the POST, and every line of every service's log that names the transfer
 * carries one W3C trace id: the client's when it sent a traceparent, else the one the copy made.
 * The payer's webhook delivery carries that trace id too, in its `traceparent` header.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { logsDir } from "../../scripts/stack/paths.ts";
import { bearer, call, createUser, settled, uniqueName } from "./api.ts";
import { type SecondCopy, startSecondCopy } from "./second-copy.ts";
import { WebhookReceiver } from "./webhook-receiver.ts";

const COPY_LOG = "transaction-service-second-copy.log";
/** Lines reach the files through each process's stdout: a moment after the transfer settles. */
const LINES_TIMEOUT_MS = 30_000;

interface Line {
  file: string;
  fields: Record<string, unknown>;
}

/** The JSON lines of the test stack's service logs (and the copy's) that name the transfer. */
async function linesNaming(transfer_id: string): Promise<Line[]> {
  const files = (await readdir(logsDir)).filter((f) => f === COPY_LOG || /^test-.*service\.log$/.test(f));
  const found: Line[] = [];
  for (const file of files) {
    const text = await readFile(join(logsDir, file), "utf8");
    for (const line of text.split("\n")) {
      if (!line.includes(transfer_id)) continue;
      try {
        found.push({ file, fields: JSON.parse(line) as Record<string, unknown> });
      } catch {
        // Not a log line of ours (an engine's or a stack trace's continuation): not checked.
      }
    }
  }
  return found;
}

describe("trace ids in the log lines about a transfer", { timeout: 5 * 60_000 }, () => {
  let copy: SecondCopy | undefined;
  const hooks = new WebhookReceiver();

  before(async () => {
    await hooks.start();
    copy = await startSecondCopy({
      OTEL_EXPORTER_OTLP_ENDPOINT: "",
      OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "",
      LOG_LEVEL: "debug",
    });
  });

  after(async () => {
    await copy?.stop();
    await hooks.stop();
  });

  /** Pays 300 through the copy with tracing off; returns the transfer's id and every line naming it. */
  async function transferThroughCopy(
    headers: Record<string, string>,
  ): Promise<{ id: string; lines: Line[] }> {
    const a = await createUser(1_000);
    const b = await createUser(0);
    // The payer's endpoint: its delivery (and, when the copy sends it, the attempt's line) names the transfer.
    const registered = await call("POST", `${(copy as SecondCopy).base}/webhooks`, {
      body: { url: `${hooks.url}/payer`, events: ["transfer.completed"] },
      headers: bearer(a.token),
    });
    assert.equal(registered.status, 201, JSON.stringify(registered.body));
    hooks.secrets.set("/payer", registered.body.data.secret);
    const answer = await call("POST", `${(copy as SecondCopy).base}/transactions/transfer`, {
      body: { source_user_id: a.id, dest_user_id: b.id, amount: 300 },
      headers: { authorization: `Bearer ${a.token}`, "idempotency-key": uniqueName("key"), ...headers },
    });
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    const id: string = answer.body.data.transaction.id;
    assert.equal((await settled(id, a.token)).status, "COMPLETED");
    // The copy logs the transitions it commits (debug); the events back may go to the stack's copy.
    const deadline = Date.now() + LINES_TIMEOUT_MS;
    for (;;) {
      const lines = await linesNaming(id);
      if (lines.some((l) => l.file === COPY_LOG && l.fields.to === "posted")) return { id, lines };
      if (Date.now() > deadline) assert.fail(`no transition of ${id} in ${COPY_LOG}`);
      await sleep(250);
    }
  }

  function assertOneTrace(id: string, lines: Line[]): string {
    const traces = new Set(lines.map((l) => l.fields.trace_id));
    const missing = lines.filter((l) => typeof l.fields.trace_id !== "string" || l.fields.transfer_id !== id);
    assert.deepEqual(
      missing.map((l) => `${l.file}: ${JSON.stringify(l.fields)}`),
      [],
      "every line naming the transfer carries trace_id and transfer_id",
    );
    assert.equal(traces.size, 1, `one trace id for ${id}: ${[...traces].join(", ")}`);
    const trace_id = String([...traces][0]);
    assert.match(trace_id, /^[0-9a-f]{32}$/);
    assert.notEqual(trace_id, "0".repeat(32));
    return trace_id;
  }

  it("gives a transfer made without a traceparent a new trace id on every line about it", async () => {
    const { id, lines } = await transferThroughCopy({});
    assertOneTrace(id, lines);
  });

  it("keeps the client's trace id on every line about the transfer, and in its webhook's traceparent", async () => {
    const trace_id = randomBytes(16).toString("hex");
    const { id, lines } = await transferThroughCopy({
      traceparent: `00-${trace_id}-${randomBytes(8).toString("hex")}-00`,
    });
    assert.equal(assertOneTrace(id, lines), trace_id);
    await hooks.until("the payer's webhook", () => hooks.count(`${id}.completed`, "/payer") > 0);
    const delivery = hooks.received.find((r) => r.webhook_id === `${id}.completed`);
    assert.equal(delivery?.verified, true);
    assert.equal(delivery?.traceparent?.split("-")[1], trace_id, `traceparent: ${delivery?.traceparent}`);
    // The attempt's lines (debug, written if the copy sent it) are in the trace too.
    await sleep(500);
    assert.equal(assertOneTrace(id, await linesNaming(id)), trace_id);
  });
});
