/**
 * user-service: users, wallets and the double-entry journal in PostgreSQL, the source of truth
 * for money. Start: config, migrations, a check of the system accounts, then HTTP.
 */
import { join } from "node:path";
import { internalPort, loadConfig } from "#packages/config/index.ts";
import { Authenticator, type AuthSecrets, secretsOrExit } from "#packages/http/auth.ts";
import { registerOpenApi } from "#packages/http/openapi.ts";
import { RateLimiter } from "#packages/http/rate-limit.ts";
import {
  closeBoth,
  createListeners,
  type Listeners,
  listenBoth,
  registerHealth,
} from "#packages/http/server.ts";
import { createLogger, type Logger } from "#packages/log/index.ts";
import { startServiceMetrics } from "#packages/metrics/service.ts";
import { createPool, migrate, type Pool } from "#packages/pg/index.ts";
import { openRedis, type RedisClient } from "#packages/redis/index.ts";
import { startServiceTracing, traceListeners } from "#packages/tracing/service.ts";
import { configShape } from "./config.ts";
import { PasswordHasher } from "./domain.ts";
import { registerRoutes } from "./http.ts";
import { assertSystemAccounts } from "./ledger/accounts.ts";
import { tokenVersionOf } from "./ledger/users.ts";
import { collectClearing } from "./metrics.ts";
import { Revocations } from "./revocation.ts";
import { registerBatchFundingRoute } from "./routes/funding.ts";

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

type Config = ReturnType<typeof readConfig>;

/** What the service runs on, opened by the caller: its config, logger, ledger database and Redis. */
export interface AppDeps {
  config: Config;
  log: Logger;
  pool: Pool;
  redis: RedisClient;
  secrets: AuthSecrets;
}

/** The service's routes on its two listeners, not yet listening. */
export async function createApp(deps: AppDeps): Promise<{ listeners: Listeners }> {
  const { config, log, pool, redis, secrets } = deps;
  const limiter = (max: number, window_ms: number, per: string) =>
    new RateLimiter(redis, {
      prefix: config.REDIS_KEY_PREFIX,
      max,
      window_ms,
      timeout_ms: config.REDIS_TIMEOUT_MS,
      logger: log,
      per,
    });

  const listeners = createListeners({ logger: log });
  traceListeners(listeners);
  const metrics = startServiceMetrics(listeners, log);
  collectClearing(metrics, pool);
  await registerOpenApi(listeners.public, {
    service: SERVICE,
    description:
      "Users, wallets and the double-entry journal: the source of truth for money. Amounts are integer minor units.",
  });
  await registerOpenApi(listeners.internal, {
    service: SERVICE,
    description: "The internal listener (loopback): the ledger's saga steps, hold reads and the audit.",
  });
  // The database is the source of truth for token versions: checked on every user request here.
  const auth = new Authenticator(secrets, { current: (user_id) => tokenVersionOf(pool, user_id) });
  const checks = { postgres: () => pool.query("SELECT 1") };
  registerHealth(listeners.public, SERVICE, checks, { auth });
  registerHealth(listeners.internal, SERVICE, checks);
  registerBatchFundingRoute(listeners.internal, auth, pool);
  registerRoutes(listeners, {
    pool,
    metrics,
    auth,
    hasher: new PasswordHasher({
      log2_n: config.SCRYPT_LOG2_N,
      concurrency_max: config.HASH_CONCURRENCY_MAX,
      queue_max: config.HASH_QUEUE_MAX,
    }),
    revocations: new Revocations(redis, {
      prefix: config.REDIS_KEY_PREFIX,
      timeout_ms: config.REDIS_TIMEOUT_MS,
      cache_ms: config.TOKEN_VERSION_CACHE_MS,
      reader_timeout_ms: config.TOKEN_VERSION_TIMEOUT_MS,
      logger: log,
    }),
    limits: {
      address: limiter(
        config.AUTH_RATE_LIMIT_ADDRESS_MAX,
        config.AUTH_RATE_LIMIT_ADDRESS_WINDOW_MS,
        "client address",
      ),
      username: limiter(
        config.AUTH_RATE_LIMIT_USERNAME_MAX,
        config.AUTH_RATE_LIMIT_USERNAME_WINDOW_MS,
        "username",
      ),
    },
  });
  return { listeners };
}

async function main(config: Config, log: Logger): Promise<void> {
  // It checks the operator's and the saga's credentials (digests suffice) and signs users' tokens.
  const secrets = secretsOrExit(
    SERVICE,
    config,
    { checks: ["ADMIN_TOKEN", "LEDGER_TOKEN"], token_secret: true },
    log,
  );
  const pool = createPool(config.LEDGER_DATABASE_URL, {
    max: config.LEDGER_POOL_MAX,
    application_name: SERVICE,
  });
  const applied = await migrate(pool, join(import.meta.dirname, "..", "migrations"));
  if (applied.length > 0) log.info({ applied }, "migrations applied");
  await assertSystemAccounts(pool);

  const redis = openRedis({
    url: config.REDIS_URL,
    logger: log,
    unreachable_message: "redis not reachable yet",
  });
  const tracing = await startServiceTracing(SERVICE, log);
  const { listeners } = await createApp({ config, log, pool, redis, secrets });
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
      await redis.quit().catch(() => undefined);
      await pool.end();
      await tracing.shutdown().catch((error: unknown) => log.warn({ err: error }, "last spans not exported"));
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

if (import.meta.main) {
  const config = readConfig();
  const log = createLogger(SERVICE, config.LOG_LEVEL);
  main(config, log).catch((error: unknown) => {
    log.fatal({ err: error }, "user-service failed to start");
    process.exit(1);
  });
}
