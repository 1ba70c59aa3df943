/**
 * The ledger client's reading of the ledger's batch answers, against a stub HTTP server: a void
 * that finds the hold posted is an answer the saga acts on (the transfer completes), not an error.
 */
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { LedgerClient, LedgerInvariantError } from "../src/saga/ledger-client.ts";

let server: Server;
let client: LedgerClient;
/** The per-step results the stub answers with, in request order. */
let results: unknown[] = [];

describe("ledger client answers", () => {
  before(async () => {
    server = createServer((request, response) => {
      request.resume();
      request.on("end", () => {
        response.writeHead(200, { "content-type": "application/json" });
        response.end(JSON.stringify({ success: true, data: { results } }));
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as AddressInfo;
    client = new LedgerClient(`http://127.0.0.1:${port}`, "test-ledger-token-0123456789", {
      timeout_ms: 2_000,
      batch_max: 10,
      in_flight_max: 1,
      waiting_max: 10,
    });
  });

  after(async () => {
    await new Promise((resolve) => server.close(resolve));
  });

  const id = "0190b5a8-0000-7000-8000-000000000001";

  it("a void that finds the hold posted answers already_posted", async () => {
    results = [{ transfer_id: id, ok: false, code: "hold_posted", message: "already posted" }];
    assert.deepEqual(await client.void(id), { kind: "already_posted" });
  });

  it("a refusal no step expects is still an invariant error, never a retry into money", async () => {
    results = [{ transfer_id: id, ok: false, code: "hold_posted", message: "already posted" }];
    await assert.rejects(client.post(id), LedgerInvariantError);
    results = [{ transfer_id: id, ok: false, code: "hold_voided", message: "already voided" }];
    await assert.rejects(client.post(id), LedgerInvariantError);
  });
});
