/**
 * The pool's statements on a real PostgreSQL (TEST_SAGA_DATABASE_URL; skipped when unset): a
 * parameterised statement is prepared once per connection and reused, one without parameters
 * runs as given (a migration's several statements, BEGIN, COMMIT), and answers do not change.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { preparedNameOf } from "../index.ts";
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
      [[preparedNameOf(insert), preparedNameOf(select)]],
    );
    assert.deepEqual(prepared.rows.map((r) => r.statement).sort(), [insert, select].sort());
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
