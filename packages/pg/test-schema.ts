/**
 * Tests on a real PostgreSQL, each file in a schema of its own: created, migrated, and dropped
 * afterwards, so test files running side by side on one database never share tables.
 */
import { createPool, migrate, type Pool } from "./index.ts";

export interface TestSchema {
  /** A pool on the base URL (where the schema lives), for what the schema's search path hides. */
  admin: Pool;
  /** The base URL with the schema as its search path, for any further pool of the test's own. */
  url: string;
  /** A pool on `url`. */
  pool: Pool;
  /** Ends the two pools and drops the schema with everything in it. */
  drop(): Promise<void>;
}

export async function openTestSchema(
  base_url: string,
  schema: string,
  options: { application_name: string; pool_max: number; admin_max?: number; migrations?: string },
): Promise<TestSchema> {
  const { application_name } = options;
  const admin = createPool(base_url, { max: options.admin_max ?? 1, application_name });
  await admin.query(`CREATE SCHEMA ${schema}`);
  const url = new URL(base_url);
  url.searchParams.set("options", `-c search_path=${schema}`);
  const pool = createPool(url.toString(), { max: options.pool_max, application_name });
  const drop = async () => {
    await pool.end();
    await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await admin.end();
  };
  if (options.migrations !== undefined) await migrate(pool, options.migrations);
  return { admin, url: url.toString(), pool, drop };
}
