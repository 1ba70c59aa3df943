/**
 * user-service: users, wallets and the double-entry journal in PostgreSQL, the source of truth
 * for money. Start: config, migrations, a check of the system accounts, then HTTP.
 */
import { join } from "node:path";
import { loadConfig } from "#packages/config/index.ts";
import { Authenticator, secretsOrExit } from "#packages/http/auth.ts";
import { registerOpenApi } from "#packages/http/openapi.ts";
import { createHttpServer, registerHealth } from "#packages/http/server.ts";
import { createLogger } from "#packages/log/index.ts";
import { createPool, migrate } from "#packages/pg/index.ts";
import { configShape } from "./config.ts";
import { registerRoutes } from "./http.ts";
import { assertSystemAccounts } from "./ledger.ts";

const SERVICE = "user-service";

function readConfig() {
  try {
    return loadConfig(configShape);
  } catch (error) {
    // The message names each bad variable; a stack trace would only bury it.
    console.error(`${SERVICE}: ${(error as Error).message}`);
    process.exit(1);
  }
}

const config = readConfig();
const log = createLogger(SERVICE, config.LOG_LEVEL);
const secrets = secretsOrExit(SERVICE, config, ["ADMIN_TOKEN", "SERVICE_TOKEN", "AUTH_TOKEN_SECRET"], log);

async function main(): Promise<void> {
  const pool = createPool(config.LEDGER_DATABASE_URL, {
    max: config.LEDGER_POOL_MAX,
    application_name: SERVICE,
  });
  const applied = await migrate(pool, join(import.meta.dirname, "..", "migrations"));
  if (applied.length > 0) log.info({ applied }, "migrations applied");
  await assertSystemAccounts(pool);

  const app = createHttpServer({ logger: log });
  await registerOpenApi(app, {
    service: SERVICE,
    description:
      "Users, wallets and the double-entry journal: the source of truth for money. Amounts are integer minor units.",
  });
  registerHealth(app, SERVICE, { postgres: () => pool.query("SELECT 1") });
  registerRoutes(app, { pool, auth: new Authenticator(secrets) });
  await app.listen({ host: config.HOST, port: config.USER_SERVICE_PORT });

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, "shutting down");
    // Stop taking requests and let the running ones finish (each is one transaction), then
    // release the database connections.
    try {
      await app.close();
      await pool.end();
      log.info("stopped");
      process.exit(0);
    } catch (error) {
      log.error({ err: error }, "unclean shutdown");
      process.exit(1);
    }
  };
  process.on("SIGTERM", (signal) => void stop(signal));
  process.on("SIGINT", (signal) => void stop(signal));
}

main().catch((error: unknown) => {
  log.fatal({ err: error }, "user-service failed to start");
  process.exit(1);
});
