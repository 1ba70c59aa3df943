import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { summariseProfile, summaryMarkdown } from "../profile.ts";

const workDir = mkdtempSync(join(tmpdir(), "profile-test-"));
after(() => rmSync(workDir, { recursive: true, force: true }));

// ~300 ms of pure computation in a named function, then a JSON.stringify-heavy one.
const busyScript = `
function spinBusyLoop(durationMs) {
  const end = Date.now() + durationMs;
  let x = 0;
  while (Date.now() < end) for (let i = 0; i < 1000; i++) x += Math.sqrt(i);
  return x;
}
function stringifyHeavy() {
  const doc = { items: Array.from({ length: 2000 }, (_, i) => ({ i, name: "item" + i, tags: ["a", "b"] })) };
  let length = 0;
  for (let k = 0; k < 150; k++) length += JSON.stringify(doc).length;
  return length;
}
spinBusyLoop(300);
stringifyHeavy();
`;

test("summarises a real V8 profile of a busy loop", () => {
  const profileDir = join(workDir, "real");
  execFileSync(process.execPath, ["--cpu-prof", `--cpu-prof-dir=${profileDir}`, "-e", busyScript]);
  const profileName = readdirSync(profileDir).find((name) => name.endsWith(".cpuprofile"));
  assert.ok(profileName, "node wrote no .cpuprofile");
  const summary = summariseProfile(join(profileDir, profileName), { top: 10 });

  assert.ok(summary.total_ms >= 300, `total ${summary.total_ms} ms`);
  assert.ok(summary.busy_ms > 0 && summary.busy_ms <= summary.total_ms);
  const spin = summary.top_functions.find((f) => f.name === "spinBusyLoop");
  assert.ok(spin, JSON.stringify(summary.top_functions));
  assert.equal(spin.location, "[eval]:2");
  assert.ok(spin.self_ms >= 150, `spinBusyLoop self ${spin.self_ms} ms`);
  assert.ok(spin.self_pct_of_busy >= 25 && spin.self_pct_of_busy <= 100, `${spin.self_pct_of_busy}%`);
  assert.ok(summary.by_origin.some((o) => o.origin === "[eval]"));

  const originSum_ms = summary.by_origin.reduce((sum, o) => sum + o.self_ms, 0);
  assert.ok(
    Math.abs(originSum_ms - summary.busy_ms) <= 0.01 * summary.busy_ms,
    `by_origin ${originSum_ms} vs busy ${summary.busy_ms}`,
  );
  const originPctSum = summary.by_origin.reduce((sum, o) => sum + o.self_pct_of_busy, 0);
  assert.ok(Math.abs(originPctSum - 100) <= 1, `by_origin percentages sum to ${originPctSum}`);

  const markdown = summaryMarkdown("busy loop", summary);
  assert.match(markdown, /^### busy loop/);
  assert.match(markdown, /\| function \| location \| self ms \| % of busy \|/);
  assert.match(markdown, /\| origin \| self ms \| % of busy \|/);
  assert.match(markdown, /`spinBusyLoop`/);
});

test("computes exact self and inclusive times, counting recursion once", () => {
  const repoRoot = "/repo";
  const frame = (functionName: string, url: string, lineNumber: number) => ({
    functionName,
    url,
    lineNumber,
    columnNumber: 0,
    scriptId: "1",
  });
  const main = frame("main", "file:///repo/services/api/src/main.ts", 9);
  const fib = frame("fib", "file:///repo/services/api/src/fib.ts", 0);
  const nodes = [
    { id: 1, callFrame: frame("(root)", "", -1), children: [2, 6, 7, 10] },
    { id: 2, callFrame: main, children: [3, 9] },
    { id: 3, callFrame: fib, children: [4, 5] },
    { id: 4, callFrame: fib, children: [8] },
    { id: 8, callFrame: fib },
    { id: 5, callFrame: frame("stringify", "", -1) },
    { id: 9, callFrame: frame("parse", "/repo/node_modules/a/node_modules/@scope/pkg/lib.js", 41) },
    { id: 6, callFrame: frame("(garbage collector)", "", -1) },
    { id: 7, callFrame: frame("(idle)", "", -1) },
    { id: 10, callFrame: frame("(program)", "", -1) },
  ];
  // node -> µs: main 1000, fib 2000+3000+500, stringify 1500, parse 800, gc 700, idle 4000, program 200
  const samples = [2, 3, 4, 8, 5, 9, 6, 7, 10];
  const timeDeltas = [1000, 2000, 3000, 500, 1500, 800, 700, 4000, 200];
  const profilePath = join(workDir, "hand-built.cpuprofile");
  const endTime = 1_000_000 + timeDeltas.reduce((sum, delta) => sum + delta, 0);
  writeFileSync(profilePath, JSON.stringify({ nodes, startTime: 1_000_000, endTime, samples, timeDeltas }));

  const summary = summariseProfile(profilePath, { repo_root: repoRoot });
  assert.equal(summary.total_ms, 13.7);
  assert.equal(summary.busy_ms, 9.7);
  assert.equal(summary.gc_ms, 0.7);
  assert.deepEqual(
    summary.top_functions.map((f) => [f.name, f.location, f.self_ms]),
    [
      ["fib", "services/api/src/fib.ts:1", 5.5],
      ["stringify", "(native)", 1.5],
      ["main", "services/api/src/main.ts:10", 1],
      ["parse", "node_modules/a/node_modules/@scope/pkg/lib.js:42", 0.8],
      ["(garbage collector)", "", 0.7],
      ["(program)", "", 0.2],
    ],
  );
  assert.equal(summary.top_functions[0]?.self_pct_of_busy, 56.7);
  assert.deepEqual(
    summary.by_origin.map((o) => [o.origin, o.self_ms]),
    [
      ["services/api", 6.5],
      ["node:internal", 1.5],
      ["@scope/pkg", 0.8],
      ["(garbage collector)", 0.7],
      ["(program)", 0.2],
    ],
  );
  // fib's outermost frame covers 2000 + 3000 + 500 + 1500; the nested frames must not add again.
  assert.deepEqual(
    summary.top_inclusive_project.map((f) => [f.name, f.location, f.total_ms, f.pct_of_busy]),
    [
      ["main", "services/api/src/main.ts:10", 8.8, 90.72],
      ["fib", "services/api/src/fib.ts:1", 7, 72.16],
    ],
  );

  const markdown = summaryMarkdown("hand-built", summary, 3);
  assert.match(markdown, /\| project function \| location \| inclusive ms \| % of busy \|/);
  assert.match(markdown, /\| `fib` \| services\/api\/src\/fib.ts:1 \| 5.5 \| 56.7% \|/);
  assert.doesNotMatch(markdown, /parse/); // cut by top = 3
});
