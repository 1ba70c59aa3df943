/**
 * A consumer killed with SIGKILL never leaves its group: its partitions move to a survivor only
 * when its session times out. With the services' consumer settings that takes a few seconds,
 * not the 10 s of a default session.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Admin, type SASLOptions } from "@platformatic/kafka";
import { createProducer } from "../index.ts";

const brokers = (process.env.TEST_KAFKA_BROKERS ?? "127.0.0.1:59092").split(",");
const sasl: SASLOptions = {
  mechanism: "SCRAM-SHA-512",
  username: "admin",
  password: process.env.KAFKA_PASSWORD_ADMIN ?? "",
};
const partitions = 6;
/** Generous for a loaded 2-core box; a 10 s session alone would take longer. */
const takeover_max_ms = 8_000;

/** A group member in its own process, and the partitions it has consumed so far. */
function member(group: string, topic: string): { child: ChildProcess; seen: Set<number> } {
  const child = spawn(process.execPath, [join(import.meta.dirname, "member.ts"), group, topic], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const seen = new Set<number>();
  createInterface({ input: child.stdout as NodeJS.ReadableStream }).on("line", (line) => {
    for (const p of (JSON.parse(line) as { partitions: number[] }).partitions) seen.add(p);
  });
  return { child, seen };
}

describe("consumer group takeover", () => {
  const topic = `test.takeover-${randomUUID()}`;
  const group = `test.takeover-${randomUUID()}`;
  const producer = createProducer({ brokers, sasl, client_id: "takeover-test" });
  const children: ChildProcess[] = [];
  after(async () => {
    for (const child of children) child.kill("SIGKILL");
    await producer.close();
    const admin = new Admin({ clientId: "takeover-test", bootstrapBrokers: brokers, sasl });
    await admin.deleteTopics({ topics: [topic] }).catch(() => {});
    await admin.close();
  });

  /** One message to every partition (explicit partition per key is the client's hash: use many keys). */
  const produceRound = () =>
    producer.send(
      Array.from({ length: 24 }, () => ({ topic, key: randomUUID(), value: { at: Date.now() } })),
    );

  /** Produces until check() holds or the time is up; the time it took, or undefined. */
  async function until(check: () => boolean, limit_ms: number): Promise<number | undefined> {
    const t0 = Date.now();
    while (Date.now() - t0 < limit_ms) {
      await produceRound();
      if (check()) return Date.now() - t0;
      await sleep(100);
    }
    return undefined;
  }

  it("moves a killed member's partitions to the survivor within a few seconds", {
    timeout: 120_000,
  }, async () => {
    const admin = new Admin({ clientId: "takeover-test", bootstrapBrokers: brokers, sasl });
    await admin.createTopics({ topics: [topic], partitions, replicas: 1 });
    await admin.close();

    const victim = member(group, topic);
    children.push(victim.child);
    // The victim alone first, so it owns every partition; then the survivor joins and takes a share.
    assert.ok((await until(() => victim.seen.size === partitions, 60_000)) !== undefined, "victim consumes");
    const survivor = member(group, topic);
    children.push(survivor.child);
    assert.ok((await until(() => survivor.seen.size > 0, 60_000)) !== undefined, "survivor joins");
    // Let the group settle so the victim is sure to hold partitions the survivor does not.
    await until(() => false, 2_000);
    const before = new Set(survivor.seen);
    const victimsOnly = [...Array(partitions).keys()].filter((p) => !before.has(p));
    assert.ok(victimsOnly.length > 0, "the victim holds some partitions");

    victim.child.kill("SIGKILL");
    const took_ms = await until(() => victimsOnly.some((p) => survivor.seen.has(p)), 30_000);
    assert.ok(took_ms !== undefined, "the survivor never consumed the victim's partitions");
    process.stdout.write(`takeover after SIGKILL: ${took_ms} ms\n`);
    assert.ok(took_ms < takeover_max_ms, `takeover took ${took_ms} ms`);
  });
});
