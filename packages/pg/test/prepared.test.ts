/**
 * The pool's statements on a real PostgreSQL (TEST_SAGA_DATABASE_URL; skipped when unset): a
 * parameterised statement is prepared once per connection and reused, one without parameters
 * runs as given (a migration's several statements, BEGIN, COMMIT), and answers do not change.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { planGenerationOf, preparedNameOf, REPLAN_AT_EXECUTIONS } from "../index.ts";
import { openTestSchema, type TestSchema } from "../test-schema.ts";

const BASE_URL = process.env.TEST_SAGA_DATABASE_URL ?? "";

describe("prepared statements", { skip: BASE_URL === "" ? "TEST_SAGA_DATABASE_URL unset" : false }, () => {
  let schema: TestSchema;

  before(async () => {
    schema = await openTestSchema(BASE_URL, `prepared_test_${process.pid}_${Date.now()}`, {
      application_name: "pg-prepared-test",
      pool_max: 1,
    });
    await schema.pool.query("CREATE TABLE things (id int PRIMARY KEY, label text NOT NULL)");
  });
  after(async () => {
    await schema.drop();
  });

  it("prepares a parameterised statement once per connection and reuses it", async () => {
    const insert = "INSERT INTO things (id, label) SELECT * FROM unnest($1::int[], $2::text[])";
    await schema.pool.query(insert, [
      [1, 2],
      ["one", "two"],
    ]);
    await schema.pool.query(insert, [[3], ["three"]]);
    const select = "SELECT label FROM things WHERE id = ANY($1::int[]) ORDER BY id";
    const { rows } = await schema.pool.query<{ label: string }>(select, [[1, 3]]);
    assert.deepEqual(
      rows.map((r) => r.label),
      ["one", "three"],
    );
    // One connection (pool_max 1): the statements it prepared are its own session's.
    const prepared = await schema.pool.query<{ name: string; statement: string }>(
      "SELECT name, statement FROM pg_prepared_statements WHERE name = ANY($1::text[]) ORDER BY name",
      [[`${preparedNameOf(insert)}_0`, `${preparedNameOf(select)}_0`]],
    );
    assert.deepEqual(prepared.rows.map((r) => r.statement).sort(), [insert, select].sort());
  });

  it("plans a statement again as its runs grow, so a plan made on an empty table does not stay", async () => {
    await schema.pool.query("CREATE TABLE growing (id int PRIMARY KEY, label text NOT NULL)");
    const update =
      "UPDATE growing g SET label = i.label FROM unnest($1::int[], $2::text[]) AS i(id, label) WHERE g.id = i.id";
    // Ten rows a run, as a batch of transitions: custom plans cost what the generic one does, so
    // PostgreSQL settles on the generic plan.
    const ids = Array.from({ length: 10 }, (_, i) => i + 1);
    const run = () => schema.pool.query(update, [ids, ids.map(String)]);
    const planOf = async () => {
      const prepared = await schema.pool.query<{ name: string }>(
        "SELECT name FROM pg_prepared_statements WHERE statement = $1",
        [update],
      );
      assert.equal(prepared.rows.length, 1, "one statement prepared for the text");
      const name = prepared.rows[0]?.name ?? "";
      const explained = await schema.pool.query<{ "QUERY PLAN": string }>(
        `EXPLAIN EXECUTE ${name}('{1,2,3,4,5,6,7,8,9,10}'::int[], '{1,2,3,4,5,6,7,8,9,10}'::text[])`,
      );
      return explained.rows.map((r) => r["QUERY PLAN"]).join("\n");
    };
    // Past PostgreSQL's five custom plans: the generic plan is the empty table's.
    for (let i = 0; i < 10; i++) await run();
    await schema.pool.query("INSERT INTO growing SELECT n, 'x' FROM generate_series(1, 50000) n");
    assert.match(await planOf(), /Seq Scan on growing/);
    for (let i = 10; i < (REPLAN_AT_EXECUTIONS[0] ?? 0) + 10; i++) await run();
    const replanned = await planOf();
    assert.match(replanned, /Index Scan using growing_pkey/);
    assert.doesNotMatch(replanned, /Seq Scan/);
  });

  it("prepares anew at each step of runs, then no more", () => {
    assert.equal(planGenerationOf(1), 0);
    assert.equal(planGenerationOf(REPLAN_AT_EXECUTIONS[0] - 1), 0);
    assert.equal(planGenerationOf(REPLAN_AT_EXECUTIONS[0]), 1);
    const last = REPLAN_AT_EXECUTIONS[REPLAN_AT_EXECUTIONS.length - 1] ?? 0;
    assert.equal(planGenerationOf(last), REPLAN_AT_EXECUTIONS.length);
    assert.equal(planGenerationOf(last * 1_000), REPLAN_AT_EXECUTIONS.length);
  });

  it("runs a statement without parameters as given, several at once", async () => {
    await schema.pool.query(
      "UPDATE things SET label = 'uno' WHERE id = 1; UPDATE things SET label = 'tres' WHERE id = 3",
    );
    const { rows } = await schema.pool.query<{ label: string }>("SELECT label FROM things ORDER BY id");
    assert.deepEqual(
      rows.map((r) => r.label),
      ["uno", "two", "tres"],
    );
  });

  it("names a text the same way every time, and different texts differently", () => {
    const a = preparedNameOf("SELECT $1::int");
    assert.equal(preparedNameOf("SELECT $1::int"), a);
    assert.notEqual(preparedNameOf("SELECT $1::bigint"), a);
  });
});
