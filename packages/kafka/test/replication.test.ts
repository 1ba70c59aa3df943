import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { topicReplication } from "../index.ts";

describe("topic replication", () => {
  it("keeps three copies with two in sync on a cluster of three or more brokers", () => {
    assert.deepEqual(topicReplication(3), { replicas: 3, min_insync_replicas: 2 });
    assert.deepEqual(topicReplication(5), { replicas: 3, min_insync_replicas: 2 });
  });

  it("keeps the one copy a single broker can hold, writable", () => {
    assert.deepEqual(topicReplication(1), { replicas: 1, min_insync_replicas: 1 });
    assert.deepEqual(topicReplication(2), { replicas: 2, min_insync_replicas: 1 });
  });

  it("refuses a cluster without brokers", () => {
    assert.throws(() => topicReplication(0), /invariant/);
  });
});
