import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, describe, it } from "node:test";

const preload = resolve(import.meta.dirname, "..", "test-exit.ts");
const dir = mkdtempSync(join(tmpdir(), "dps-test-exit-"));
after(() => rmSync(dir, { recursive: true, force: true }));

/** A test file whose first test leaves an interval running: without the preload it never ends. */
function lingeringFile(name: string, second: string): string {
  const file = join(dir, name);
  writeFileSync(
    file,
    `import { describe, test } from "node:test";
import assert from "node:assert/strict";
describe("lingers", () => {
  test("leaves a timer running", () => { setInterval(() => {}, 1000); });
  test("second", () => { ${second} });
  test("third", () => {});
});
`,
  );
  return file;
}

/** `node --test` as `npm test` runs it, bounded: a run that does not end is killed and says so. */
function runTests(file: string) {
  const started = Date.now();
  // A runner of its own: this process's NODE_TEST_CONTEXT would make it act as a child.
  const { NODE_TEST_CONTEXT: _, ...env } = process.env;
  const res = spawnSync(process.execPath, ["--test", "--import", preload, "--test-reporter=tap", file], {
    encoding: "utf8",
    env,
    timeout: 30_000,
  });
  return { ...res, took_ms: Date.now() - started };
}

describe("a test file that leaves something running (scripts/stack/test-exit.ts)", () => {
  it("ends soon after its tests, with every verdict reported", () => {
    const res = runTests(lingeringFile("passing.test.mjs", ""));
    assert.equal(res.error, undefined, "the run did not end by itself");
    assert.equal(res.status, 0, res.stdout);
    assert.match(res.stdout, /^# tests 3$/m);
    assert.match(res.stdout, /^# pass 3$/m);
    assert.ok(res.took_ms < 20_000, `took ${res.took_ms} ms`);
  });

  it("ends as a failure when one of its tests failed", () => {
    const res = runTests(lingeringFile("failing.test.mjs", 'assert.fail("refused");'));
    assert.equal(res.error, undefined, "the run did not end by itself");
    assert.equal(res.status, 1, res.stdout);
    assert.match(res.stdout, /^\s*not ok 2 - second$/m);
    assert.match(res.stdout, /^# fail 1$/m);
  });
});
