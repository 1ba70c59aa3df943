/**
 * The bank test (after Jepsen's): wallets with a known total, concurrent random transfers
 * through the public API, every request with an Idempotency-Key and a share of them sent again
 * with the same key, while services are killed with SIGKILL and engines are restarted. Then:
 * wait until every transfer is final, check from the outside that the wallets still hold the
 * total they started with and that no key made two transfers, and run the audit.
 *
 * Faults are driven through the stack's control server (scripts/stack/control.ts).
 */
import { randomUUID } from "node:crypto";
import { readFile } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import { backoff_ms } from "#packages/runtime/index.ts";
import { runConcurrently } from "#packages/runtime/loops.ts";
import { type AuditOptions, type AuditResult, auditOptionsFromEnv, formatAudit, runAudit } from "./audit.ts";
import { CHAOS_WEBHOOK_EVENTS, type ChaosWebhookSummary, ChaosWebhooks } from "./chaos-webhooks.ts";

/**
 * Services are killed with SIGKILL (their supervisor restarts them); engines are killed with
 * SIGKILL too (`kill9`, the engine watcher brings them back from what is on disk), and restarted
 * gracefully on the second round.
 */
export const faultKinds = [
  "kill:transaction-service",
  "kill9:kafka",
  "kill:user-service",
  "kill9:ferretdb",
  "kill:transaction-command-service",
  "kill9:postgres",
  "kill:transaction-query-service",
  "kill9:redis",
  "kill:transaction-service",
  "restart:kafka",
  "kill:user-service",
  "restart:ferretdb",
  "kill:transaction-command-service",
  "restart:postgres",
  "kill:transaction-query-service",
  "restart:redis",
] as const;
export type FaultKind = (typeof faultKinds)[number];

export interface ChaosOptions {
  user_url: string;
  transaction_url: string;
  control_url: string;
  /** CONTROL_TOKEN: the control server answers 401 without it. */
  control_token: string;
  admin_token: string;
  wallets: number;
  opening_balance: number;
  transfers: number;
  concurrency: number;
  faults: number;
  /** Pause between the end of one fault's recovery and the next fault. */
  fault_gap_ms: number;
  quiet_timeout_ms: number;
  replay_share: number;
  /** Disbursements sent during the run (at least; more while faults remain), and items in each. */
  batches: number;
  batch_items: number;
  /** Every wallet registers a webhook endpoint; every final event must reach it, signed. */
  webhooks: boolean;
  audit: AuditOptions;
  log: (line: string) => void;
}

export interface ChaosReport {
  sent: number;
  accepted: number;
  refused: number;
  completed: number;
  failed: number;
  replays: number;
  retries: number;
  batches_sent: number;
  batches_final: number;
  webhooks: ChaosWebhookSummary | null;
  faults: string[];
  run_ms: number;
  quiet_ms: number;
  client_total_before: number;
  client_total_after: number;
  violations: string[];
  audit: AuditResult;
  ok: boolean;
}

const CHAOS_PASSWORD = "chaos-password";

interface Answer {
  status: number;
  headers: Headers;
  // biome-ignore lint/suspicious/noExplicitAny: free-form JSON from the API
  body: any;
}

async function call(
  method: string,
  url: string,
  body?: unknown,
  headers: Record<string, string> = {},
  timeout_ms = 10_000,
): Promise<Answer> {
  const response = await fetch(url, {
    method,
    headers: body === undefined ? headers : { ...headers, "content-type": "application/json" },
    body: body === undefined ? null : JSON.stringify(body),
    signal: AbortSignal.timeout(timeout_ms),
  });
  const text = await response.text();
  return { status: response.status, headers: response.headers, body: text ? JSON.parse(text) : null };
}

/** Retry a call through outages: network errors, 5xx and 409 in-progress are retried, bounded. */
async function persist(
  what: string,
  fn: () => Promise<Answer>,
  counters: { retries: number },
  wait_max_ms = 180_000,
): Promise<Answer> {
  const started = Date.now();
  for (let attempt = 0; ; attempt++) {
    try {
      const answer = await fn();
      if (answer.status < 500 && answer.status !== 409 && answer.status !== 429) return answer;
    } catch {
      // the service is down or restarting: retry
    }
    if (Date.now() - started > wait_max_ms) throw new Error(`${what}: no answer within ${wait_max_ms} ms`);
    counters.retries += 1;
    await sleep(backoff_ms(attempt, 50, 2_000, { kind: "none" }));
  }
}

// biome-ignore lint/complexity/noExcessiveLinesPerFunction: the transfer and batch workers, the fault injector and the quiet check share the run's counters and violations
export async function runChaos(options: ChaosOptions): Promise<ChaosReport> {
  const started = Date.now();
  const counters = { retries: 0 };
  const violations: string[] = [];
  const admin: Record<string, string> = options.admin_token
    ? { authorization: `Bearer ${options.admin_token}` }
    : {};
  const control = { authorization: `Bearer ${options.control_token}` };

  // Wallets with a known total.
  const wallets: number[] = [];
  const usernames = new Map<number, string>();
  for (let i = 0; i < options.wallets; i++) {
    const username = `chaos_${process.pid}_${Date.now().toString(36)}_${i}`;
    const answer = await persist(
      "create wallet",
      () =>
        call(
          "POST",
          `${options.user_url}/users`,
          {
            username,
            password: CHAOS_PASSWORD,
            balance: options.opening_balance,
          },
          admin,
        ),
      counters,
    );
    if (answer.status !== 201)
      throw new Error(`could not create a wallet: ${answer.status} ${JSON.stringify(answer.body)}`);
    wallets.push(answer.body.data.user.id);
    usernames.set(answer.body.data.user.id, username);
  }
  // Each transfer is sent with its payer's own access token (only the owner may spend), logged in
  // once and again shortly before it expires. A login that fails (user-service down) throws, so
  // the call that needed it is retried like any other.
  const tokens = new Map<number, { token: string; renew_at_ms: number }>();
  const tokenFor = async (user_id: number): Promise<Record<string, string>> => {
    const cached = tokens.get(user_id);
    if (cached !== undefined && Date.now() < cached.renew_at_ms)
      return { authorization: `Bearer ${cached.token}` };
    const answer = await call("POST", `${options.user_url}/auth/login`, {
      username: usernames.get(user_id),
      password: CHAOS_PASSWORD,
    });
    if (answer.status !== 200) throw new Error(`login of ${user_id}: ${answer.status}`);
    const { access_token, expires_in } = answer.body.data as { access_token: string; expires_in: number };
    tokens.set(user_id, {
      token: access_token,
      renew_at_ms: Date.now() + Math.max(1, expires_in - 60) * 1_000,
    });
    return { authorization: `Bearer ${access_token}` };
  };
  const walletTotal = async (): Promise<number> => {
    let total = 0;
    for (const id of wallets) {
      const answer = await persist(
        "read wallet",
        () => call("GET", `${options.user_url}/users/${id}`, undefined, admin),
        counters,
      );
      total += answer.body.data.user.balance as number;
    }
    return total;
  };
  const hooks = options.webhooks ? await registerWebhooks(options, wallets, tokenFor, counters) : null;
  // The receiver is closed however the run ends, so that a failed run's process can exit.
  try {
    const client_total_before = await walletTotal();
    options.log(`chaos: ${wallets.length} wallets holding ${client_total_before}`);

    // The workload.
    const accepted = new Map<string, string>(); // idempotency key -> transfer id
    let sent = 0;
    let refused = 0;
    let replays = 0;
    let faultsDone = false;
    // Set when any part of the run fails: the others stop sending, so a failed run ends (and
    // says why) instead of sending transfers for ever to a system that will not recover.
    let halted = false;
    const worker = async () => {
      while (!halted && (sent < options.transfers || !faultsDone)) {
        sent += 1;
        const source = wallets[Math.floor(Math.random() * wallets.length)] as number;
        let dest = wallets[Math.floor(Math.random() * wallets.length)] as number;
        if (dest === source) dest = wallets[(wallets.indexOf(source) + 1) % wallets.length] as number;
        const body = {
          source_user_id: source,
          dest_user_id: dest,
          amount: 1 + Math.floor(Math.random() * (options.opening_balance / 20)),
        };
        const key = randomUUID();
        const send = async () =>
          call("POST", `${options.transaction_url}/transactions/transfer`, body, {
            ...(await tokenFor(source)),
            "idempotency-key": key,
          });
        const answer = await persist("transfer", send, counters);
        const id: string | undefined =
          answer.body?.data?.transaction?.id ?? answer.body?.details?.transaction?.id;
        if (answer.status === 201 && id) accepted.set(key, id);
        else if ((answer.status === 422 || answer.status === 404) && id) {
          refused += 1;
          accepted.set(key, id);
        } else violations.push(`unexpected answer ${answer.status}: ${JSON.stringify(answer.body)}`);
        if (Math.random() < options.replay_share) {
          replays += 1;
          const again = await persist("replay", send, counters);
          const againId = again.body?.data?.transaction?.id ?? again.body?.details?.transaction?.id;
          if (againId !== id) violations.push(`I3: key ${key} made two transfers (${id}, ${againId})`);
        }
      }
    };

    // Disbursements beside the transfers: funded in one ledger commit, then item by item, while
    // the faults hit. One batch in four pays an unknown user too, whose item must end FAILED.
    const batches = new Map<string, string>(); // idempotency key -> disbursement id
    let batches_sent = 0;
    const batchWorker = async () => {
      while (!halted && (batches_sent < options.batches || !faultsDone)) {
        batches_sent += 1;
        const payer = wallets[Math.floor(Math.random() * wallets.length)] as number;
        const items = Array.from({ length: options.batch_items }, (_, i) => {
          let dest = wallets[Math.floor(Math.random() * wallets.length)] as number;
          if (dest === payer) dest = wallets[(wallets.indexOf(payer) + 1) % wallets.length] as number;
          if (i === 0 && batches_sent % 4 === 0) dest = UNKNOWN_PAYEE;
          const amount =
            1 + Math.floor(Math.random() * (options.opening_balance / (10 * options.batch_items)));
          return { dest_user_id: dest, amount, reference: `chaos-${i}` };
        });
        const key = randomUUID();
        const send = async () =>
          call(
            "POST",
            `${options.transaction_url}/disbursements`,
            { source_user_id: payer, items },
            {
              ...(await tokenFor(payer)),
              "idempotency-key": key,
            },
          );
        const answer = await persist("disbursement", send, counters);
        const id: string | undefined =
          answer.body?.data?.disbursement?.id ?? answer.body?.details?.disbursement?.id;
        if ((answer.status === 201 || answer.status === 422) && id) batches.set(key, id);
        else
          violations.push(`unexpected disbursement answer ${answer.status}: ${JSON.stringify(answer.body)}`);
        await sleep(200);
      }
    };

    // The faults, one after another, each followed by recovery.
    const faults: string[] = [];
    const injector = async () => {
      await sleep(options.fault_gap_ms);
      for (let i = 0; i < options.faults && !halted; i++) {
        const fault = faultKinds[i % faultKinds.length] as FaultKind;
        const [action, target] = fault.split(":") as ["kill" | "kill9" | "restart", string];
        const url =
          action === "kill"
            ? `${options.control_url}/services/${target}/kill?signal=KILL`
            : `${options.control_url}/engines/${target}/${action}`;
        const t0 = Date.now();
        // An engine restart answers once the engine is healthy again (Kafka takes 6-8 s); a kill9
        // once it is dead, and waitHealthy() then waits for the watcher to bring it back.
        const answer = await call("POST", url, undefined, control, 120_000).catch(
          (error: Error) => ({ status: 0, body: error.message }) as Answer,
        );
        if (answer.status !== 200)
          violations.push(
            `fault ${fault} could not be injected: ${answer.status} ${JSON.stringify(answer.body)}`,
          );
        await waitHealthy(options.control_url, control, 120_000);
        faults.push(`${fault} (${Date.now() - t0} ms to recover)`);
        options.log(
          `chaos: fault ${i + 1}/${options.faults} ${fault}, recovered in ${Date.now() - t0} ms; ${sent} transfers sent`,
        );
        await sleep(options.fault_gap_ms);
      }
      faultsDone = true;
    };

    const haltOnFailure = (part: () => Promise<void>) => async () => {
      try {
        await part();
      } catch (error) {
        halted = true;
        throw error;
      }
    };
    const outcomes = await Promise.allSettled(
      [
        injector,
        ...(options.batches > 0 ? [batchWorker] : []),
        ...Array.from({ length: options.concurrency }, () => worker),
      ].map((part) => haltOnFailure(part)()),
    );
    const failure = outcomes.find((o): o is PromiseRejectedResult => o.status === "rejected");
    if (failure !== undefined) throw failure.reason;
    const run_ms = Date.now() - started;
    options.log(`chaos: workload done: ${sent} sent, ${accepted.size} accepted, waiting for quiet`);

    // Quiet: every transfer final, seen through the public API.
    const quietStarted = Date.now();
    let completed = 0;
    let failed = 0;
    const ids = [...accepted.values()];
    await runConcurrently(ids, 16, async (id) => {
      for (;;) {
        const answer = await persist(
          "read transfer",
          () => call("GET", `${options.transaction_url}/transactions/${id}`, undefined, admin),
          counters,
        );
        const status = answer.body?.data?.transaction?.status;
        if (status === "COMPLETED" || status === "FAILED")
          hooks?.expectTransfer(answer.body.data.transaction);
        if (status === "COMPLETED") completed += 1;
        if (status === "FAILED") failed += 1;
        if (status === "COMPLETED" || status === "FAILED") break;
        if (Date.now() - quietStarted > options.quiet_timeout_ms) {
          violations.push(`I4: transfer ${id} still ${status} after ${options.quiet_timeout_ms} ms of quiet`);
          break;
        }
        await sleep(200);
      }
    });
    let batches_final = 0;
    for (const id of batches.values()) {
      const problem = await checkBatch(options, id, admin, counters, quietStarted, hooks);
      if (problem === null) batches_final += 1;
      else violations.push(problem);
    }
    // The records may trail the public status by a moment: let the saga finish its last steps.
    let audit = await runAudit({ ...options.audit, quiet: true });
    while (!audit.ok && Date.now() - quietStarted < options.quiet_timeout_ms) {
      await sleep(500);
      audit = await runAudit({ ...options.audit, quiet: true });
    }
    const hooked = hooks === null ? null : await hooks.check(options.quiet_timeout_ms);
    if (hooked !== null) violations.push(...hooked.violations);
    const quiet_ms = Date.now() - quietStarted;
    const client_total_after = await walletTotal();
    if (client_total_after !== client_total_before) {
      violations.push(`I1: the wallets held ${client_total_before} and now hold ${client_total_after}`);
    }
    return {
      sent,
      accepted: accepted.size - refused,
      refused,
      completed,
      failed,
      replays,
      retries: counters.retries,
      batches_sent,
      batches_final,
      webhooks: hooked?.summary ?? null,
      faults,
      run_ms,
      quiet_ms,
      client_total_before,
      client_total_after,
      violations,
      audit,
      ok: violations.length === 0 && audit.ok,
    };
  } finally {
    await hooks?.stop();
  }
}

/** No user has this id: an item paid to it must be refunded on its own and end FAILED. */
const UNKNOWN_PAYEE = 2_000_000_000;

/**
 * Waits until the disbursement is final (seen through the public API), then checks that its
 * status and figures agree with its items. Null when they do, else the violation.
 */
async function checkBatch(
  options: ChaosOptions,
  id: string,
  admin: Record<string, string>,
  counters: { retries: number },
  quiet_started_ms: number,
  hooks: ChaosWebhooks | null,
): Promise<string | null> {
  const read = (path: string) =>
    persist(
      "read disbursement",
      () => call("GET", `${options.transaction_url}${path}`, undefined, admin),
      counters,
    );
  for (;;) {
    const d = (await read(`/disbursements/${id}`)).body?.data?.disbursement;
    if (d !== undefined && d.status !== "PENDING") break;
    if (Date.now() - quiet_started_ms > options.quiet_timeout_ms) {
      return `I4: disbursement ${id} still PENDING after ${options.quiet_timeout_ms} ms of quiet`;
    }
    await sleep(200);
  }
  const d = (await read(`/disbursements/${id}`)).body.data.disbursement;
  const items: {
    id: string;
    status: string;
    amount: number;
    source_user_id: number;
    dest_user_id: number;
  }[] = [];
  for (let cursor: string | null = null, pages = 0; pages < 20; pages++) {
    const page = await read(
      `/disbursements/${id}/items?limit=100${cursor === null ? "" : `&cursor=${cursor}`}`,
    );
    items.push(...page.body.data.items);
    cursor = page.body.data.pagination.next_cursor;
    if (cursor === null) break;
  }
  hooks?.expectBatch(d);
  for (const item of items) if (item.status !== "PENDING") hooks?.expectTransfer(item);
  const completed = items.filter((i) => i.status === "COMPLETED");
  const failed = items.filter((i) => i.status === "FAILED");
  const derived =
    completed.length === items.length
      ? "COMPLETED"
      : completed.length === 0
        ? "FAILED"
        : "PARTIALLY_COMPLETED";
  const sum = (list: { amount: number }[]) => list.reduce((total, i) => total + i.amount, 0);
  if (
    items.length !== d.item_count ||
    completed.length + failed.length !== items.length ||
    d.counts.completed !== completed.length ||
    d.counts.failed !== failed.length ||
    d.status !== derived ||
    d.amount_completed !== sum(completed) ||
    d.amount_refunded !== sum(failed)
  ) {
    return `batch: disbursement ${id} says ${JSON.stringify(d)} but its items are ${completed.length} COMPLETED, ${failed.length} FAILED of ${items.length}`;
  }
  if (items.some((i) => i.dest_user_id === UNKNOWN_PAYEE && i.status !== "FAILED")) {
    return `batch: disbursement ${id} credited an unknown payee`;
  }
  return null;
}

/** One endpoint per wallet, on the run's receiver, registered with the wallet's own token. */
async function registerWebhooks(
  options: ChaosOptions,
  wallets: number[],
  tokenFor: (user_id: number) => Promise<Record<string, string>>,
  counters: { retries: number },
): Promise<ChaosWebhooks> {
  const hooks = new ChaosWebhooks();
  await hooks.start();
  for (const user_id of wallets) {
    const body = { url: hooks.urlFor(user_id), events: CHAOS_WEBHOOK_EVENTS };
    const answer = await persist(
      "register webhook",
      async () => call("POST", `${options.transaction_url}/webhooks`, body, await tokenFor(user_id)),
      counters,
    );
    if (answer.status !== 201)
      throw new Error(`could not register a webhook: ${answer.status} ${JSON.stringify(answer.body)}`);
    hooks.registered(user_id, answer.body.data.secret);
  }
  return hooks;
}

async function waitHealthy(
  control_url: string,
  control: Record<string, string>,
  timeout_ms: number,
): Promise<void> {
  const deadline = Date.now() + timeout_ms;
  let unhealthy = "the control server";
  let logFiles: string[] = [];
  for (;;) {
    try {
      const status = await call("GET", `${control_url}/status`, undefined, control);
      const body = status.body as {
        engines: Array<{ name: string; healthy: boolean }>;
        services: Array<{ name: string; url: string; pid?: number; restarts: number; logFile: string }>;
      };
      const sick = body.engines.filter((e) => !e.healthy).map((e) => e.name);
      const health = await Promise.all(
        body.services.map(async (s) => ({
          s,
          answer: await call("GET", `${s.url}/health`).catch(() => null),
        })),
      );
      logFiles = [];
      for (const { s, answer } of health) {
        if (answer?.status === 200) continue;
        sick.push(
          `${s.name} ${JSON.stringify(answer?.body?.data?.engines ?? "down")} (pid ${s.pid ?? "none"}, ${s.restarts} restarts)`,
        );
        logFiles.push(s.logFile);
      }
      if (sick.length === 0) return;
      unhealthy = sick.join("; ");
    } catch {
      // control server busy: retry
    }
    if (Date.now() > deadline) {
      const tails = await Promise.all(logFiles.map((file) => logTail(file, 20)));
      throw new Error(`the system did not recover in time: ${unhealthy}${tails.join("")}`);
    }
    await sleep(250);
  }
}

/** The last lines of a service's log, to say why it did not come back. */
async function logTail(file: string, lines_max: number): Promise<string> {
  const text = await readFile(file, "utf8").catch((error: Error) => `(no log: ${error.message})`);
  return `\n--- ${file}, last ${lines_max} lines:\n${text.trimEnd().split("\n").slice(-lines_max).join("\n")}`;
}

export function formatChaos(report: ChaosReport): string {
  return [
    `transfers  sent ${report.sent}, accepted ${report.accepted}, refused at once ${report.refused}, completed ${report.completed}, failed ${report.failed}`,
    `batches    ${report.batches_sent} disbursements sent, ${report.batches_final} final and agreeing with their items`,
    ...(report.webhooks === null
      ? []
      : [
          `webhooks   ${report.webhooks.endpoints} endpoints; ${report.webhooks.events_delivered} of ${report.webhooks.events_expected} events delivered signed, in ${report.webhooks.deliveries} deliveries (${report.webhooks.unverified} unsigned)`,
        ]),
    `retries    ${report.retries} client retries through outages, ${report.replays} deliberate replays with the same key`,
    `faults     ${report.faults.length}: ${report.faults.join("; ")}`,
    `timing     workload ${(report.run_ms / 1000).toFixed(1)} s, time to quiet ${(report.quiet_ms / 1000).toFixed(1)} s`,
    `wallets    total before ${report.client_total_before}, after ${report.client_total_after}`,
    ...report.violations.map((v) => `VIOLATION  ${v}`),
    formatAudit(report.audit),
    `chaos      ${report.ok ? "OK" : "FAILED"}`,
  ].join("\n");
}

/** Options from the test stack's environment (set by `npm run chaos` / `npm test`) and defaults. */
export function chaosOptionsFromEnv(
  env: NodeJS.ProcessEnv,
  overrides: Partial<ChaosOptions> = {},
): ChaosOptions {
  const required = (name: string): string => {
    const value = env[name];
    if (!value) throw new Error(`${name} is not set: run through \`npm run chaos\` or \`npm test\``);
    return value;
  };
  return {
    user_url: required("TEST_USER_SERVICE_URL"),
    transaction_url: required("TEST_TRANSACTION_SERVICE_URL"),
    control_url: required("TEST_STACK_CONTROL_URL"),
    control_token: required("CONTROL_TOKEN"),
    admin_token: env.ADMIN_TOKEN ?? "",
    wallets: 20,
    opening_balance: 10_000,
    transfers: 500,
    concurrency: 8,
    faults: faultKinds.length,
    fault_gap_ms: 1_500,
    quiet_timeout_ms: 180_000,
    replay_share: 0.3,
    batches: 10,
    batch_items: 20,
    webhooks: true,
    audit: auditOptionsFromEnv(env, true),
    log: (line) => console.log(line),
    ...overrides,
  };
}

if (import.meta.main) {
  const { values } = parseArgs({
    options: {
      transfers: { type: "string" },
      faults: { type: "string" },
      wallets: { type: "string" },
      concurrency: { type: "string" },
    },
  });
  const number = (value: string | undefined, fallback: number): number =>
    value === undefined ? fallback : Number(value);
  const defaults = chaosOptionsFromEnv(process.env);
  const report = await runChaos({
    ...defaults,
    transfers: number(values.transfers, 5_000),
    faults: number(values.faults, 24),
    wallets: number(values.wallets, 50),
    concurrency: number(values.concurrency, 16),
  });
  console.log(formatChaos(report));
  process.exit(report.ok ? 0 : 1);
}
