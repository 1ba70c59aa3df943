// The README's environment tables against the services' configuration shapes: every variable a
// service reads is listed under that service (or under "Common to all services") with the default
// the code applies, and every variable listed is one the code reads.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import type { z } from "zod";
import { configShape as commandService } from "../../../services/transaction-command-service/src/config.ts";
import { configShape as queryService } from "../../../services/transaction-query-service/src/config.ts";
import { configShape as transactionService } from "../../../services/transaction-service/src/config.ts";
import { configShape as userService } from "../../../services/user-service/src/config.ts";
import { commonEnv } from "../index.ts";

const readme = readFileSync(join(import.meta.dirname, "..", "..", "..", "README.md"), "utf8");

type Shape = Record<string, z.ZodType>;

const services: Record<string, Shape> = {
  "user-service": userService,
  "transaction-command-service": commandService,
  "transaction-query-service": queryService,
  "transaction-service": transactionService,
};

/** Rows of the table under each `#### <title>` heading of the environment section: name -> default cell. */
export function envTables(markdown: string): Map<string, Map<string, string>> {
  const section = markdown.split("### Environment variables\n")[1]?.split(/\n## /)[0] ?? "";
  const tables = new Map<string, Map<string, string>>();
  let rows: Map<string, string> | undefined;
  for (const line of section.split("\n")) {
    const heading = /^#### (.+)$/.exec(line);
    if (heading?.[1] !== undefined) {
      rows = new Map();
      tables.set(heading[1].trim(), rows);
      continue;
    }
    const cells = line.split("|").map((cell) => cell.trim());
    // | `NAME` | default | meaning |: cells[0] and the last are the empty sides of the row.
    const name = /^`([A-Z][A-Z0-9_]*)`$/.exec(cells[1] ?? "")?.[1];
    if (rows !== undefined && name !== undefined) rows.set(name, cells[2] ?? "");
  }
  return tables;
}

/**
 * The default as the README writes it: `value`, or a parenthesised note for "none" ((empty),
 * (required, ...), (public port + 1000)), which the code writes as "" or leaves undefined.
 */
function readmeDefault(cell: string): string {
  if (cell.startsWith("(")) return "";
  return cell.replace(/^`(.*)`$/, "$1");
}

/** The default the code applies, as text; "" when there is none (required, or derived at start). */
function codeDefault(schema: z.ZodType): string {
  const parsed = schema.safeParse(undefined);
  return parsed.success && parsed.data !== undefined ? String(parsed.data) : "";
}

const tables = envTables(readme);
// The stack scripts' own variables (ports of the local engines, generated passwords) are no
// service's configuration.
tables.delete("The stack scripts");

test("the README has a table for the common variables and one per service", () => {
  assert.deepEqual([...tables.keys()].sort(), ["Common to all services", ...Object.keys(services)].sort());
});

test("every common variable is listed with the code's default", () => {
  const rows = tables.get("Common to all services") ?? new Map<string, string>();
  for (const [name, schema] of Object.entries(commonEnv as Shape)) {
    const cell = rows.get(name);
    assert.notEqual(cell, undefined, `README: ${name} missing from "Common to all services"`);
    assert.equal(readmeDefault(cell as string), codeDefault(schema), `README: default of ${name}`);
  }
  for (const name of rows.keys())
    assert.ok(name in commonEnv, `README lists ${name}, which no service reads`);
});

for (const [service, shape] of Object.entries(services)) {
  test(`every ${service} variable is listed with the code's default, and nothing else`, () => {
    const rows = tables.get(service) ?? new Map<string, string>();
    const own = Object.entries(shape).filter(([name]) => !(name in commonEnv));
    for (const [name, schema] of own) {
      const cell = rows.get(name);
      assert.notEqual(cell, undefined, `README: ${name} missing from the ${service} table`);
      assert.equal(readmeDefault(cell as string), codeDefault(schema), `README: default of ${name}`);
    }
    for (const name of rows.keys()) {
      assert.ok(
        name in shape && !(name in commonEnv),
        `README lists ${name} under ${service}, which it does not read`,
      );
    }
  });
}

test("the parser reads a table and catches a wrong default", () => {
  const sample =
    "### Environment variables\n\n#### x\n\n| variable | default | meaning |\n| - | - | - |\n| `A_MS` | `5` | m |\n";
  assert.deepEqual([...(envTables(sample).get("x") ?? [])], [["A_MS", "`5`"]]);
  assert.notEqual(readmeDefault("`5`"), "6");
});
