/**
 * Least privilege in the engines, checked against the test stack's real PostgreSQL and Redis and
 * its control server: the services' roles are not superusers and own only their own databases,
 * Redis answers nobody without its password, the control server nobody without its token, and no
 * service is handed another's credentials or the stack's own.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { connect } from "node:net";
import { after, describe, it } from "node:test";
import pg from "pg";
import { createClient } from "redis";

const ledgerUrl = process.env.TEST_LEDGER_DATABASE_URL ?? "";
const sagaUrl = process.env.TEST_SAGA_DATABASE_URL ?? "";
const redisUrl = process.env.TEST_REDIS_URL ?? "";
const controlUrl = process.env.TEST_STACK_CONTROL_URL ?? "";
const controlToken = process.env.CONTROL_TOKEN ?? "";
const skip = ledgerUrl === "" || controlUrl === "" ? "no test stack (run through npm test)" : false;

/** The same server and database as `url`, as the role (user and password) of `as`. */
function asRoleOf(url: string, as: string): string {
  const target = new URL(url);
  const role = new URL(as);
  target.username = role.username;
  target.password = role.password;
  return target.toString();
}

const clients: pg.Client[] = [];
async function connectTo(url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 });
  client.on("error", () => {});
  clients.push(client);
  await client.connect();
  return client;
}

async function pgError(fn: () => Promise<unknown>): Promise<string> {
  try {
    await fn();
  } catch (err) {
    return (err as { code?: string }).code ?? String(err);
  }
  return "no error";
}

describe("least privilege", { skip }, () => {
  after(async () => {
    await Promise.all(clients.map((c) => c.end().catch(() => {})));
  });

  for (const [service, url, other] of [
    ["ledger", ledgerUrl, sagaUrl],
    ["saga", sagaUrl, ledgerUrl],
  ] as const) {
    it(`the ${service} role is no superuser, owns its database and cannot create databases or roles`, async () => {
      const c = await connectTo(url);
      const me = await c.query<{ user: string; super: boolean; owner: string; createdb: boolean }>(
        `SELECT current_user AS user, r.rolsuper AS super, r.rolcreatedb AS createdb,
                pg_get_userbyid(d.datdba) AS owner
           FROM pg_roles r, pg_database d
          WHERE r.rolname = current_user AND d.datname = current_database()`,
      );
      const row = me.rows[0];
      assert.equal(row?.user, `${service}_service`);
      assert.equal(row?.super, false);
      assert.equal(row?.createdb, false);
      assert.equal(row?.owner, row?.user);
      assert.equal(await pgError(() => c.query("CREATE DATABASE dps_privilege_probe")), "42501");
      assert.equal(await pgError(() => c.query("CREATE ROLE dps_privilege_probe")), "42501");
      // As the owner it migrates its own database: it may create tables and functions there.
      await c.query("CREATE TEMP TABLE privilege_probe (id int)");
    });

    it(`the ${service} role cannot connect to the other service's database`, async () => {
      assert.equal(await pgError(() => connectTo(asRoleOf(other, url))), "42501");
    });
  }

  it("Redis refuses commands without the password, and serves them with it", async () => {
    const { hostname, port } = new URL(redisUrl);
    const reply = await new Promise<string>((resolve, reject) => {
      const socket = connect({ host: hostname, port: Number(port) }, () => socket.write("PING\r\n"));
      socket.setTimeout(5000, () => reject(new Error("no answer")));
      socket.once("data", (b) => {
        socket.destroy();
        resolve(b.toString("utf8"));
      });
      socket.once("error", reject);
    });
    assert.match(reply, /^-NOAUTH/);
    const client = createClient({ url: redisUrl });
    client.on("error", () => {});
    await client.connect();
    try {
      assert.equal(await client.ping(), "PONG");
    } finally {
      await client.quit();
    }
  });

  it("each service's environment holds only its own credentials", async () => {
    const res = await fetch(`${controlUrl}/status`, {
      headers: { authorization: `Bearer ${controlToken}` },
      signal: AbortSignal.timeout(10_000),
    });
    const { services } = (await res.json()) as { services: { name: string; pid: number | null }[] };
    const never = ["CONTROL_TOKEN", "LEDGER_DB_PASSWORD", "SAGA_DB_PASSWORD", "REDIS_PASSWORD"];
    const onlyFor: Record<string, string[]> = {
      LEDGER_DATABASE_URL: ["user-service"],
      SAGA_DATABASE_URL: ["transaction-service"],
      // user-service: log-in limits and token versions; transaction-service: cache and rate limits.
      REDIS_URL: ["user-service", "transaction-service"],
    };
    assert.equal(services.length, 4);
    for (const { name, pid } of services) {
      assert.ok(pid !== null, `${name} is not running`);
      const names = readFileSync(`/proc/${pid}/environ`, "utf8")
        .split("\0")
        .map((entry) => entry.slice(0, entry.indexOf("=")));
      for (const key of never) assert.ok(!names.includes(key), `${name} holds ${key}`);
      for (const [key, owners] of Object.entries(onlyFor))
        assert.equal(names.includes(key), owners.includes(name), `${name} and ${key}`);
    }
  });

  it("the control server answers 401 without its token", async () => {
    const status = async (headers: Record<string, string>): Promise<number> => {
      const res = await fetch(`${controlUrl}/status`, { headers, signal: AbortSignal.timeout(10_000) });
      await res.body?.cancel();
      return res.status;
    };
    assert.equal(await status({}), 401);
    assert.equal(await status({ authorization: "Bearer not-the-control-token" }), 401);
    assert.equal(await status({ authorization: `Bearer ${controlToken}` }), 200);
    const kill = await fetch(`${controlUrl}/engines/redis/kill9`, {
      method: "POST",
      signal: AbortSignal.timeout(10_000),
    });
    assert.equal(kill.status, 401);
  });
});
