/**
 * user-service: users, wallets and the double-entry journal in PostgreSQL, the source of truth
 * for money. Start: config, migrations, a check of the system accounts, then HTTP.
 */
import { join } from "node:path";
import { internalPort, loadConfig } from "#packages/config/index.ts";
import { Authenticator, secretsOrExit } from "#packages/http/auth.ts";
import { registerOpenApi } from "#packages/http/openapi.ts";
import { closeBoth, createListeners, listenBoth, registerHealth } from "#packages/http/server.ts";
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
// It checks the operator's and the saga's credentials (digests suffice) and signs users' tokens.
const secrets = secretsOrExit(
  SERVICE,
  config,
  { checks: ["ADMIN_TOKEN", "LEDGER_TOKEN"], token_secret: true },
  log,
);

async function main(): Promise<void> {
  const pool = createPool(config.LEDGER_DATABASE_URL, {
    max: config.LEDGER_POOL_MAX,
    application_name: SERVICE,
  });
  const applied = await migrate(pool, join(import.meta.dirname, "..", "migrations"));
  if (applied.length > 0) log.info({ applied }, "migrations applied");
  await assertSystemAccounts(pool);

  const listeners = createListeners({ logger: log });
  await registerOpenApi(listeners.public, {
    service: SERVICE,
    description:
      "Users, wallets and the double-entry journal: the source of truth for money. Amounts are integer minor units.",
  });
  await registerOpenApi(listeners.internal, {
    service: SERVICE,
    description: "The internal listener (loopback): the ledger's saga steps, hold reads and the audit.",
  });
  const auth = new Authenticator(secrets);
  const checks = { postgres: () => pool.query("SELECT 1") };
  registerHealth(listeners.public, SERVICE, checks, { auth });
  registerHealth(listeners.internal, SERVICE, checks);
  registerRoutes(listeners, { pool, auth });
  await listenBoth(listeners, {
    host: config.HOST,
    port: config.USER_SERVICE_PORT,
    internal_host: config.INTERNAL_HOST,
    internal_port: internalPort(config.USER_SERVICE_INTERNAL_PORT, config.USER_SERVICE_PORT),
  });

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, "shutting down");
    // Stop taking requests and let the running ones finish (each is one transaction), then
    // release the database connections.
    try {
      await closeBoth(listeners);
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
