/**
 * `npm start -- --replicas 2 --brokers 3` from outside, on a stack of its own (outside.ts), under
 * the bank workload through the balancers: several careful clients sending transfers of random
 * amounts between wallets of a known total, every request with an Idempotency-Key and sent again
 * with the same key until it is answered, some sent once more after their answer (the same
 * transfer must come back). One after another: SIGKILL copy 1 of each service, the Kafka broker
 * leading the most partitions, then the active KRaft controller; the supervisor and the engine
 * watcher restart each. Per fault it prints the time from the kill to the first transfer sent
 * after it that COMPLETED, when the victim was back, and when the rate of transfers accepted and
 * of transfers COMPLETED was back to 80% of its level before the kill (and before the restart).
 * Then: every request was answered within the client's retry window, every transfer is final, the
 * money adds up, the audit passes (I1-I6), and every rate recovered within 15 s.
 * Run by `npm run chaos -- --cluster`.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type { Answer } from "../../../test/integration/api.ts";
import { canConnect, isAlive, readPidFile } from "../proc.ts";
import { busiestLeader, type ClusterAccess, waitFullIsr } from "./cluster-kafka.ts";
import {
  apiOfThisStack,
  command,
  dataDir,
  env,
  killEverything,
  ready,
  secretsOfThisStack,
  start,
} from "./outside.ts";
import { type RecoveryBounds, rateRecovery } from "./recovery.ts";

// The stack's Kafka module reads the broker ports when first imported: this stack's.
Object.assign(process.env, {
  DPS_KAFKA_PORT: env.DPS_KAFKA_PORT,
  DPS_KAFKA_CONTROLLER_PORT: env.DPS_KAFKA_CONTROLLER_PORT,
});
const { serviceNames, servicePorts } = await import("../env.ts");
const { activeControllerId, kafkaBrokerList, kafkaNode } = await import("../engines/kafka.ts");
const { COPY_PORT_STEP } = await import("../balancer.ts");

/** How long a careful client keeps sending the same request again before it gives up. */
const retry_window_ms = 30_000;
/** After a fault, transfers must be accepted and completed again at 80% of the rate before it within 15 s. */
const bounds: RecoveryBounds = { baseline_ms: 10_000, window_ms: 2_000, recovery_max_ms: 15_000, share: 0.8 };
const { recovery_max_ms } = bounds;
const clients = 6;
const replay_share = 0.2;
const brokers_count = 3;
const say = (line: string) => process.stdout.write(`${line}\n`);

/** This stack's brokers, as its super user; its secrets exist once it has started. */
const kafkaAccess = (): ClusterAccess => {
  const password = secretsOfThisStack().KAFKA_PASSWORD_ADMIN ?? "";
  process.env.KAFKA_PASSWORD_ADMIN = password; // the controller quorum query reads it from here
  return {
    brokers: kafkaBrokerList(kafkaNode(0, brokers_count)),
    sasl: { mechanism: "SCRAM-SHA-512", username: "admin", password },
  };
};

const pidFileOf = (name: string): string =>
  join(dataDir, "run", name.startsWith("kafka") ? "" : "services", `${name}.pid`);
const pidOf = (name: string): number => Number(readFileSync(pidFileOf(name), "utf8"));

/** A call as a careful client makes it: again after a failure (a timeout, a refusal), until the retry window has passed. */
async function careful<T>(what: string, call: () => Promise<T>): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    try {
      return await call();
    } catch (error) {
      if (Date.now() - t0 > retry_window_ms)
        throw new Error(`${what}: no answer within ${retry_window_ms} ms`, { cause: error });
      await sleep(500);
    }
  }
}

/** A fault or a restart, and when it happened. */
interface Event {
  label: string;
  at: number;
  first_completed_ms?: number;
  back_ms?: number;
}

/** Until the victim runs again (a new live pid) and answers (a service's /health, a broker's port); then. */
async function backAgain(victim: string, killed_pid: number): Promise<number> {
  const service = serviceNames.find((n) => victim === `${n}-1`);
  const port =
    service === undefined
      ? kafkaNode(Number(victim.slice("kafka-".length)) - 1, brokers_count).port
      : Number(env[servicePorts[service].env]) + COPY_PORT_STEP;
  const deadline = Date.now() + 180_000;
  for (; Date.now() < deadline; await sleep(100)) {
    const pid = readPidFile(pidFileOf(victim));
    if (pid === undefined || pid === killed_pid || !isAlive(pid)) continue;
    if (service === undefined) {
      if (await canConnect("127.0.0.1", port, 500)) return Date.now();
      continue;
    }
    const health = await fetch(`http://127.0.0.1:${port}/health`, {
      signal: AbortSignal.timeout(1_000),
    }).catch(() => null);
    if (health?.status === 200) return Date.now();
  }
  throw new Error(`${victim} not back within 180 s`);
}

describe("two copies of every service and three brokers under kills", { timeout: 1_800_000 }, () => {
  after(() => killEverything());

  it("answers every request within the retry window, finishes every transfer, keeps the money, recovers its rate", async () => {
    const s = start("--replicas", "2", "--brokers", String(brokers_count));
    await ready(s, 400_000);
    const api = await apiOfThisStack();
    const kafka = kafkaAccess();
    const opening = 1_000_000;
    // One at a time (a password hash each, slow on a busy box); one that timed out may have
    // happened: the next attempt is another user.
    const users: Awaited<ReturnType<typeof api.createUser>>[] = [];
    while (users.length < 8) users.push(await careful("sign-up", () => api.createUser(opening)));

    /** One request as a careful client sends it: the same key again until answered. */
    let slowest_ms = 0;
    const sendUntilAnswered = async (body: unknown, key: string, token: string): Promise<Answer> => {
      const t0 = Date.now();
      for (;;) {
        const answer: Answer | null = await api.transfer(body, key, token).catch(() => null);
        if (answer !== null && answer.status < 500 && answer.status !== 409 && answer.status !== 429) {
          slowest_ms = Math.max(slowest_ms, Date.now() - t0);
          return answer;
        }
        assert.ok(Date.now() - t0 < retry_window_ms, `a transfer unanswered for ${retry_window_ms} ms`);
        await sleep(250);
      }
    };
    const acceptedAt: number[] = [];
    /** A transfer of a random amount between two random wallets; its id. */
    const send = async (): Promise<string> => {
      const [a, b] = [...users].sort(() => Math.random() - 0.5);
      assert.ok(a && b);
      const body = { source_user_id: a.id, dest_user_id: b.id, amount: 1 + Math.floor(Math.random() * 100) };
      const key = api.uniqueName("cluster");
      const answer = await sendUntilAnswered(body, key, a.token);
      assert.equal(answer.status, 201, JSON.stringify(answer.body));
      acceptedAt.push(Date.now());
      const id = answer.body.data.transaction.id as string;
      if (Math.random() < replay_share) {
        const again = await sendUntilAnswered(body, key, a.token);
        assert.equal(again.body?.data?.transaction?.id, id, `I3: key ${key} made two transfers`);
      }
      return id;
    };

    const ids: string[] = [];
    let loading = true;
    const load = Array.from({ length: clients }, async () => {
      while (loading) ids.push(await send());
    });

    /** The time from `since` to the first transfer sent after it that completes. */
    const firstCompleted = async (since: number): Promise<number> => {
      for (;;) {
        const id = await send();
        ids.push(id);
        const final = await api.settled(id, api.adminToken, 60_000).catch(() => null);
        if (final?.status === "COMPLETED") return Date.now() - since;
      }
    };

    const events: Event[] = [];
    /** SIGKILL the victim, time the first completed transfer, wait for its restart and for both rates to settle. */
    const fault = async (victim: string, why: string) => {
      const killed_pid = pidOf(victim);
      const killed_at = Date.now();
      process.kill(killed_pid, "SIGKILL");
      const back = backAgain(victim, killed_pid);
      const first_completed_ms = await firstCompleted(killed_at);
      const back_at = await back;
      events.push({ label: `SIGKILL ${why} (${victim})`, at: killed_at, first_completed_ms });
      say(`SIGKILL ${why} (${victim}): first transfer completed ${first_completed_ms} ms after the kill`);
      events.push({ label: `restart of ${victim}`, at: back_at, back_ms: back_at - killed_at });
      say(`restart of ${victim}: back ${back_at - killed_at} ms after the kill`);
      await sleep(Math.max(0, back_at + recovery_max_ms + 1_000 - Date.now()));
      // The accepted rate now, in case a later fault ends the run; the completed rate needs the final reads.
      for (const e of events.slice(-2))
        say(
          `${e.label}: accepted rate back to 80% after ${rateRecovery(acceptedAt, e.at, bounds).ms ?? "-"} ms`,
        );
    };
    /** A broker fault should find every partition with all its replicas in sync; says when it does not. */
    const inSync = async () => {
      const { ms, behind } = await waitFullIsr(kafka, 180_000);
      say(
        behind.length === 0
          ? `every replica in sync (waited ${ms} ms)`
          : `not in sync after ${ms} ms: ${behind.slice(0, 10).join(", ")}${behind.length > 10 ? ` and ${behind.length - 10} more` : ""}`,
      );
    };

    try {
      await sleep(bounds.baseline_ms + 5_000);
      for (const name of serviceNames) await fault(`${name}-1`, `copy 1 of ${name}`);
      await inSync();
      await fault(`kafka-${await busiestLeader(kafka)}`, "the broker leading the most partitions");
      await inSync();
      await fault(
        `kafka-${await activeControllerId(kafkaNode(0, brokers_count))}`,
        "the active KRaft controller",
      );
    } finally {
      loading = false; // the clients stop, whatever happened
    }
    await Promise.all(load);
    say(`${ids.length} transfers; slowest answer ${slowest_ms} ms`);

    const completedAt: number[] = [];
    for (const id of ids) {
      const final = await careful("read", () => api.settled(id, api.adminToken, 120_000));
      assert.ok(["COMPLETED", "FAILED"].includes(final.status), JSON.stringify(final));
      // A final transfer's updated_at is the commit of its last transition.
      if (final.status === "COMPLETED") completedAt.push(Date.parse(final.updated_at));
    }
    const balances = await Promise.all(users.map((u) => careful("balance", () => api.balanceOf(u.id))));
    assert.equal(
      balances.reduce((x, y) => x + y, 0),
      opening * users.length,
    );
    say(`${completedAt.length} completed, ${ids.length - completedAt.length} failed; the money adds up`);
    const audit = command("audit", "--quiet");
    assert.equal(await audit.exited, 0, audit.output());

    const slow: string[] = [];
    for (const e of events) {
      const accepted = rateRecovery(acceptedAt, e.at, bounds);
      const completed = rateRecovery(completedAt, e.at, bounds);
      const first =
        e.first_completed_ms === undefined
          ? ""
          : `first transfer completed after ${e.first_completed_ms} ms; `;
      const back = e.back_ms === undefined ? "" : `back ${e.back_ms} ms after the kill; `;
      say(
        `${e.label}: ${first}${back}${accepted.before_per_s.toFixed(1)} accepted/s and ${completed.before_per_s.toFixed(1)} completed/s before; 80% of them again after ${accepted.ms ?? "-"} / ${completed.ms ?? "-"} ms`,
      );
      if (accepted.ms === undefined || completed.ms === undefined) slow.push(e.label);
    }
    assert.deepEqual(slow, [], `rate not back to 80% within ${recovery_max_ms} ms`);

    s.child.kill("SIGTERM");
    assert.equal(await s.exited, 0, s.output());
  });
});
