// The package README's table of environment variables against webhookConfigShape: every variable
// is listed with the default the code applies, and nothing else is listed.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import type { z } from "zod";
import { loadConfig } from "#packages/config/index.ts";
import { createLogger } from "#packages/log/index.ts";
import type { Pool } from "#packages/pg/index.ts";
import { dispatcherOptions, dispatcherSettings, webhookConfigShape } from "../config.ts";
import { threadShares } from "../thread.ts";

const readme = readFileSync(join(import.meta.dirname, "..", "README.md"), "utf8");
const section = readme.split("## Environment variables")[1]?.split("\n## ")[0] ?? "";
const rows = new Map(
  section
    .split("\n")
    .map((line) => line.split("|").map((cell) => cell.trim()))
    .flatMap((cells) => {
      const name = /^`([A-Z][A-Z0-9_]*)`$/.exec(cells[1] ?? "")?.[1];
      return name === undefined ? [] : [[name, (cells[2] ?? "").replace(/^`(.*)`$/, "$1")] as const];
    }),
);

test("the README lists every webhook variable with the code's default, and nothing else", () => {
  for (const [name, schema] of Object.entries(webhookConfigShape as Record<string, z.ZodType>)) {
    assert.equal(rows.get(name), String(schema.parse(undefined)), `README: default of ${name}`);
  }
  assert.deepEqual([...rows.keys()].sort(), Object.keys(webhookConfigShape).sort());
});

test("the defaults make a dispatcher whose lease outlasts an attempt", () => {
  const config = loadConfig(webhookConfigShape, {});
  const options = dispatcherOptions(config, {} as Pool, createLogger("webhooks-test", "silent"));
  assert.ok(options.lease_ms > options.attempt_timeout_ms);
  assert.equal(options.attempt_timeout_ms, 10_000);
  assert.equal(options.retry.window_ms, 3 * 86_400_000);
  assert.equal(options.guard.allow_private, false);
  assert.equal(loadConfig(webhookConfigShape, { WEBHOOK_ALLOW_PRIVATE: "true" }).WEBHOOK_ALLOW_PRIVATE, true);
});

test("dispatcher threads split the process's limits, and never outnumber them", () => {
  const settings = {
    ...dispatcherSettings(loadConfig(webhookConfigShape, {})),
    concurrency_max: 128,
    endpoint_in_flight_max: 64,
  };
  const two = threadShares(settings, 2);
  assert.equal(two.threads, 2);
  assert.equal(two.settings.concurrency_max, 64);
  assert.equal(two.settings.endpoint_in_flight_max, 32);
  const fragile = threadShares({ ...settings, endpoint_in_flight_max: 1 }, 2);
  assert.deepEqual([fragile.threads, fragile.settings.endpoint_in_flight_max], [1, 1]);
  const odd = threadShares({ ...settings, endpoint_in_flight_max: 5 }, 2);
  assert.ok(odd.threads * odd.settings.endpoint_in_flight_max <= 5);
  assert.throws(() => threadShares(settings, 0));
});
