/**
 * The load generator's errors by kind: an answer's status or a failed call's code, at most
 * ERROR_KINDS_MAX kinds named, said in the run's lines; and the kinds the API client's own
 * failures carry, against a local HTTP server.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { createServer, type Server } from "node:http";
import { after, describe, it } from "node:test";
import {
  countError,
  ERROR_KINDS_MAX,
  type ErrorKinds,
  errorKind,
  errorsSaid,
  formatErrorKinds,
  OTHER_KIND,
} from "../errors.ts";
import { ApiClient, countedLoop } from "../load.ts";

describe("errors by kind", () => {
  it("names the first ERROR_KINDS_MAX kinds and counts the rest as other, losing none", () => {
    const kinds: ErrorKinds = {};
    for (let i = 0; i < 15; i++) countError(kinds, `HTTP ${500 + i}`);
    countError(kinds, "HTTP 500");
    countError(kinds, "HTTP 514");
    assert.equal(Object.keys(kinds).length, ERROR_KINDS_MAX + 1);
    assert.equal(kinds["HTTP 500"], 2);
    assert.equal(kinds[OTHER_KIND], 6);
    assert.equal(
      Object.values(kinds).reduce((a, b) => a + b, 0),
      17,
    );
  });

  it("takes a kind named like an object's own property as any other", () => {
    const kinds: ErrorKinds = {};
    countError(kinds, "constructor");
    assert.deepEqual(kinds, { constructor: 1 });
  });

  it("reads a network error's code, else its name", () => {
    assert.equal(errorKind(Object.assign(new Error("socket hang up"), { code: "ECONNRESET" })), "ECONNRESET");
    assert.equal(errorKind(new TypeError("bad")), "TypeError");
    assert.equal(errorKind("a string"), "string");
  });

  it("says the kinds most frequent first, other last", () => {
    assert.equal(
      formatErrorKinds({ other: 9, TIMEOUT: 1, "HTTP 503": 4 }),
      "HTTP 503 ×4, TIMEOUT ×1, other ×9",
    );
    assert.equal(errorsSaid(5, { "HTTP 503": 4, TIMEOUT: 1 }), "5 errors (HTTP 503 ×4, TIMEOUT ×1)");
    assert.equal(errorsSaid(0, {}), "0 errors");
    // Results written before the kinds were counted.
    assert.equal(errorsSaid(2, undefined), "2 errors");
  });

  it("counts a run's errors by kind: the POST's status or the failed call's code", async () => {
    let posts = 0;
    const api = {
      async call(method: string) {
        if (method !== "POST") throw new Error("only POSTs fail here");
        posts += 1;
        if (posts % 2 === 0) throw Object.assign(new Error("socket hang up"), { code: "ECONNRESET" });
        return { status: 503, body: { error: { code: "unavailable" } } };
      },
    };
    const target = {
      api: api as unknown as ApiClient,
      tokenFor: async () => "token",
      amount_max_minor: 10,
      final_timeout_ms: 5_000,
    };
    const run = await countedLoop(
      target,
      { wallets: [1, 2], hot_share: 0 },
      { concurrency: 1, transfers: 4 },
    );
    assert.equal(run.errors, 4);
    assert.deepEqual(run.error_kinds, { "HTTP 503": 2, ECONNRESET: 2 });
  });
});

describe("the API client's failures carry their kind", () => {
  const server: Server = createServer((req, res) => {
    if (req.url === "/slow") return; // never answers
    res.writeHead(503, { "content-type": "text/html" }).end("<html>503 Service Unavailable</html>");
  });
  after(() => {
    server.closeAllConnections();
    server.close();
  });

  it("TIMEOUT when no answer comes in time, HTTP <status> not JSON for a proxy's error page", async () => {
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    const { port } = server.address() as { port: number };
    const api = new ApiClient(`http://127.0.0.1:${port}`, 2, 200);
    try {
      const kindOf = (path: string) =>
        api.call("GET", path, {}).then(
          () => assert.fail(`${path} must fail`),
          (error: unknown) => errorKind(error),
        );
      assert.equal(await kindOf("/slow"), "TIMEOUT");
      assert.equal(await kindOf("/page"), "HTTP 503 not JSON");
    } finally {
      api.close();
    }
  });
});
