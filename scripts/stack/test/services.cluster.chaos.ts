/**
 * `npm start -- --replicas 2 --brokers 3` from outside, on a stack of its own (outside.ts), under
 * a steady load of transfers through the balancers from careful clients (every request with an
 * Idempotency-Key, sent again with the same key until it is answered). One after another: SIGKILL
 * copy 1 of each service, then a Kafka broker; the supervisor and the engine watcher bring each
 * back. Per fault it prints the time from the kill to the first transfer sent after it that
 * COMPLETED. Then: every request was answered within the client's retry window, every transfer
 * is final, the money adds up and the audit passes. Run by `npm run chaos -- --cluster`.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type { Answer } from "../../../test/integration/api.ts";
import { serviceNames } from "../env.ts";
import { apiOfThisStack, command, dataDir, killEverything, ready, start } from "./outside.ts";

/** How long a careful client keeps sending the same request again before it gives up. */
const retry_window_ms = 30_000;
/** After a fault, transfers must be accepted again at 80% of the rate before it within this. */
const recovery_max_ms = 15_000;
const say = (line: string) => process.stdout.write(`${line}\n`);

const pidOf = (name: string): number =>
  Number(
    readFileSync(join(dataDir, "run", name.startsWith("kafka") ? "" : "services", `${name}.pid`), "utf8"),
  );

describe("two copies of every service and three brokers under kills", { timeout: 1_200_000 }, () => {
  after(() => killEverything());

  it("answers every request within the retry window, finishes every transfer, keeps the money", async () => {
    const s = start("--replicas", "2", "--brokers", "3");
    await ready(s, 400_000);
    const api = await apiOfThisStack();
    const opening = 1_000_000;
    const users = await Promise.all(Array.from({ length: 6 }, () => api.createUser(opening)));

    /** One transfer as a careful client sends it: the same key again until answered. The id, or undefined if refused. */
    let slowest_ms = 0;
    const acceptedAt: number[] = [];
    const send = async (): Promise<string | undefined> => {
      const [a, b] = [...users].sort(() => Math.random() - 0.5);
      assert.ok(a && b);
      const key = api.uniqueName("cluster");
      const t0 = Date.now();
      for (;;) {
        const answer: Answer | null = await api
          .transfer({ source_user_id: a.id, dest_user_id: b.id, amount: 1 }, key, a.token)
          .catch(() => null);
        if (answer?.status === 201) {
          slowest_ms = Math.max(slowest_ms, Date.now() - t0);
          acceptedAt.push(Date.now());
          return answer.body.data.transaction.id as string;
        }
        if (answer !== null && answer.status < 500 && answer.status !== 409 && answer.status !== 429)
          assert.fail(`${answer.status} ${JSON.stringify(answer.body)}`);
        assert.ok(Date.now() - t0 < retry_window_ms, `a transfer unanswered for ${retry_window_ms} ms`);
        await sleep(250);
      }
    };

    const ids: string[] = [];
    let loading = true;
    const load = Array.from({ length: 4 }, async () => {
      while (loading) {
        const id = await send();
        if (id !== undefined) ids.push(id);
      }
    });

    /** The time from now to the first transfer sent after it that completes. */
    const firstCompleted = async (since: number): Promise<number> => {
      for (;;) {
        const id = await send();
        if (id === undefined) continue;
        const final = await api.settled(id, api.adminToken, 60_000).catch(() => null);
        if (final?.status === "COMPLETED") return Date.now() - since;
      }
    };

    /** The time from a fault to 1 s of transfers accepted at 80% of the rate of the 5 s before it. */
    const rateRecovery = async (at: number): Promise<number | undefined> => {
      await sleep(Math.max(0, at + recovery_max_ms + 1_000 - Date.now()));
      const between = (from: number, to: number) => acceptedAt.filter((t) => t >= from && t < to).length;
      const before = between(at - 5_000, at) / 5;
      for (let t = at; t + 1_000 <= at + recovery_max_ms; t += 100) {
        if (between(t, t + 1_000) >= 0.8 * before) return t + 1_000 - at;
      }
      return undefined;
    };

    await sleep(10_000);
    const victims = [...serviceNames.map((n) => `${n}-1`), "kafka-2"];
    for (const victim of victims) {
      const killed_at = Date.now();
      process.kill(pidOf(victim), "SIGKILL");
      const first_ms = await firstCompleted(killed_at);
      const recovered_ms = await rateRecovery(killed_at);
      say(
        `SIGKILL ${victim}: first transfer completed ${first_ms} ms after the kill; 80% of the rate after ${recovered_ms ?? "-"} ms`,
      );
      assert.ok(recovered_ms !== undefined, `${victim}: rate not back to 80% within ${recovery_max_ms} ms`);
      await sleep(victim.startsWith("kafka") ? 60_000 : 5_000); // a broker takes a while to come back
    }
    loading = false;
    await Promise.all(load);
    say(`${ids.length} transfers; slowest answer ${slowest_ms} ms`);

    let completed = 0;
    for (const id of ids) {
      const final = await api.settled(id, api.adminToken, 120_000);
      assert.ok(["COMPLETED", "FAILED"].includes(final.status), JSON.stringify(final));
      if (final.status === "COMPLETED") completed += 1;
    }
    const balances = await Promise.all(users.map((u) => api.balanceOf(u.id)));
    assert.equal(
      balances.reduce((x, y) => x + y, 0),
      opening * users.length,
    );
    say(`${completed} completed, ${ids.length - completed} failed; the money adds up`);
    const audit = command("audit", "--quiet");
    assert.equal(await audit.exited, 0, audit.output());

    s.child.kill("SIGTERM");
    assert.equal(await s.exited, 0, s.output());
  });
});
