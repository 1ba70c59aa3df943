/**
 * The read side's client against a local HTTP server standing in for transaction-query-service:
 * each read is one GET of its path, with the read side's credential, the page's cursor only where
 * one is given, and within the client's timeout.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { createServer, type IncomingMessage } from "node:http";
import { after, before, describe, it } from "node:test";
import { UpstreamError } from "#packages/http/client.ts";
import { QueryClient } from "../src/query-client.ts";

describe("QueryClient", () => {
  const seen: IncomingMessage[] = [];
  const server = createServer((req, res) => {
    seen.push(req);
    if (req.url?.startsWith("/transactions/slow")) return; // never answers
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ path: req.url }));
  });
  let base: string;

  before(async () => {
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    base = `http://127.0.0.1:${(server.address() as { port: number }).port}/`;
  });
  after(() => {
    server.closeAllConnections();
    server.close();
  });

  it("GETs each read's path with the read side's credential", async () => {
    const query = new QueryClient(base, "query-secret", 2_000);
    const answers = await Promise.all([
      query.getTransfer("a/b c"),
      query.getDisbursement("d1"),
      query.listPayerDisbursements(7, { limit: 5 }),
      query.listUserTransfers(8, { limit: 20, cursor: "abc=" }),
      query.listDisbursementItems("d2", { limit: 3 }),
      query.listDisbursementItems("d2", { limit: 3, cursor: "12", status: "FAILED" }),
    ]);
    assert.deepEqual(
      answers.map((a) => [a.status, (a.body as { path: string }).path]),
      [
        [200, "/transactions/a%2Fb%20c"],
        [200, "/disbursements/d1"],
        [200, "/disbursements/user/7?limit=5"],
        [200, "/transactions/user/8?limit=20&cursor=abc%3D"],
        [200, "/disbursements/d2/items?limit=3"],
        [200, "/disbursements/d2/items?limit=3&cursor=12&status=FAILED"],
      ],
    );
    for (const req of seen) {
      assert.equal(req.method, "GET");
      assert.equal(req.headers.authorization, "Bearer query-secret");
    }
  });

  it("gives up after its timeout", async () => {
    const query = new QueryClient(base, "query-secret", 200);
    await assert.rejects(query.getTransfer("slow"), (error: unknown) => {
      assert.ok(error instanceof UpstreamError);
      assert.equal(error.cause_kind, "timeout");
      return true;
    });
  });
});
