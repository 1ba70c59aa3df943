import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, describe, it } from "node:test";

const preload = resolve(import.meta.dirname, "..", "test-exit.ts");
const dir = mkdtempSync(join(tmpdir(), "dps-test-exit-"));
after(() => rmSync(dir, { recursive: true, force: true }));

/** `node --test` as `npm test` runs it, on `files`, bounded: a run that does not end is killed. */
function runTests(files: string[]) {
  // A runner of its own: this process's NODE_TEST_CONTEXT would make it act as a child.
  const { NODE_TEST_CONTEXT: _, ...env } = process.env;
  const args = ["--test", "--test-force-exit", "--import", preload, "--test-reporter=tap", ...files];
  return spawnSync(process.execPath, args, { encoding: "utf8", env, timeout: 60_000, maxBuffer: 256 << 20 });
}

/** A test file that leaves a timer running (so only a forced exit ends it), with `tests` tests. */
function lingeringFile(name: string, tests: string[]): string {
  const file = join(dir, name);
  writeFileSync(
    file,
    [
      'import { test } from "node:test";',
      'import assert from "node:assert/strict";',
      "setInterval(() => {}, 1000);",
      ...tests,
    ].join("\n"),
  );
  return file;
}

describe("test files' exit (scripts/stack/test-exit.ts)", () => {
  it("reports every verdict of files that end by a forced exit", () => {
    // Many quick tests with long names: the last verdicts of a file are still being written when
    // the forced exit comes (without the preload this run reported 281-308 of 320).
    const name = "x".repeat(1_500);
    const files = Array.from({ length: 8 }, (_, f) =>
      lingeringFile(
        `many-${f}.test.mjs`,
        Array.from({ length: 40 }, (_, i) => `test("f${f} t${i} ${name}", () => {});`),
      ),
    );
    const res = runTests(files);
    assert.equal(res.error, undefined, "the run did not end by itself");
    assert.equal(res.status, 0, res.stderr);
    assert.match(res.stdout, /^# tests 320$/m);
    assert.match(res.stdout, /^# pass 320$/m);
  });

  it("ends a file that leaves something running, and a failure in it fails the run", () => {
    const file = lingeringFile("failing.test.mjs", [
      'test("first", () => {});',
      'test("second", () => { assert.fail("refused"); });',
    ]);
    const res = runTests([file]);
    assert.equal(res.error, undefined, "the run did not end by itself");
    assert.equal(res.status, 1, res.stdout);
    assert.match(res.stdout, /^not ok 2 - second$/m);
    assert.match(res.stdout, /^# fail 1$/m);
  });
});
