import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createLogger } from "#packages/log/index.ts";
import { retryStartup } from "../index.ts";

describe("retryStartup", () => {
  const logger = createLogger("startup-test", "silent");

  it("fails an attempt that never answers and retries it, telling the step its attempt number", {
    timeout: 10_000,
  }, async () => {
    const attempts: number[] = [];
    const result = await retryStartup(
      "a step",
      logger,
      async (attempt) => {
        attempts.push(attempt);
        if (attempt === 0) return new Promise<string>(() => {}); // a driver call that hangs
        return "up";
      },
      5_000,
      50,
    );
    assert.equal(result, "up");
    assert.deepEqual(attempts, [0, 1]);
  });

  it("gives up after wait_max_ms with the last attempt's error", { timeout: 10_000 }, async () => {
    await assert.rejects(
      retryStartup("a step", logger, () => new Promise<never>(() => {}), 100, 40),
      /a step: attempt \d+ timed out after 40 ms/,
    );
  });
});
