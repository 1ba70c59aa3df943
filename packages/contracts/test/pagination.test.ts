import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { canonicalCursor, decodeCursor, encodeCursor } from "../pagination.ts";

describe("cursors", () => {
  it("have one canonical spelling per position", () => {
    const cursor = encodeCursor({
      t: "2026-01-01T00:00:00.000000Z",
      id: "0190b5a8-0000-7000-8000-00000000abcd",
    });
    const respelled = Buffer.from(
      JSON.stringify({ id: "0190B5A8-0000-7000-8000-00000000ABCD", t: "2026-01-01T01:00:00+01:00" }),
    ).toString("base64url");
    assert.equal(canonicalCursor(respelled), cursor);
    assert.equal(canonicalCursor(cursor), cursor);
    assert.deepEqual(decodeCursor(respelled), decodeCursor(cursor));
    assert.equal(canonicalCursor("nonsense"), null);
  });

  it("keep PostgreSQL's microseconds, so rows of one statement are not skipped", () => {
    const cursor = encodeCursor({ t: "2026-01-01T00:00:00.123456+00:00", id: "a" });
    assert.equal(decodeCursor(cursor)?.t, "2026-01-01T00:00:00.123456Z");
  });
});
