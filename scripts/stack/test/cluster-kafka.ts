// What the cluster suites ask of a Kafka cluster: which broker leads the most partitions, and
// when every partition has all its replicas back in sync (a restarted broker has caught up).
import { setTimeout as sleep } from "node:timers/promises";
import { Admin, type SASLOptions } from "@platformatic/kafka";

export interface ClusterAccess {
  brokers: string[];
  sasl: SASLOptions;
}

interface PartitionState {
  topic: string;
  index: number;
  leader: number;
  replicas: number[];
  isr: number[];
}

/** Every partition of the given topics (default: every topic but the internal ones). */
async function partitions(access: ClusterAccess, topics?: string[]): Promise<PartitionState[]> {
  const admin = new Admin({
    clientId: "cluster-chaos",
    bootstrapBrokers: access.brokers,
    sasl: access.sasl,
    timeout: 5_000,
  });
  try {
    // The client keeps no metadata of internal topics (__consumer_offsets): the others, then.
    const names = topics ?? (await admin.listTopics());
    const metadata = await admin.metadata({ topics: names, forceUpdate: true });
    return [...metadata.topics.entries()].flatMap(([topic, t]) =>
      [...(t?.partitions ?? [])].map((p, index) => ({
        topic,
        index,
        leader: p.leader,
        replicas: p.replicas,
        isr: p.isr,
      })),
    );
  } finally {
    await admin.close();
  }
}

/** node.id -> partitions it leads. */
export async function leaderCounts(access: ClusterAccess, topics?: string[]): Promise<Map<number, number>> {
  const counts = new Map<number, number>();
  for (const p of await partitions(access, topics)) counts.set(p.leader, (counts.get(p.leader) ?? 0) + 1);
  return counts;
}

/** The node.id leading the most partitions. */
export async function busiestLeader(access: ClusterAccess, topics?: string[]): Promise<number> {
  const busiest = [...(await leaderCounts(access, topics)).entries()].sort((a, b) => b[1] - a[1])[0];
  if (busiest === undefined) throw new Error("no partition has a leader");
  return busiest[0];
}

/** Partitions (topic/index) with a replica out of sync, or the error that kept the answer away. */
async function outOfSync(access: ClusterAccess, topics?: string[]): Promise<string[]> {
  try {
    const all = await partitions(access, topics);
    if (all.length === 0) return ["no partitions"];
    return all.filter((p) => p.isr.length < p.replicas.length).map((p) => `${p.topic}/${p.index}`);
  } catch (error) {
    return [error instanceof Error ? error.message : String(error)];
  }
}

/**
 * Waits until every replica of every partition is in sync. The time it took; or, past the
 * timeout, what was still out of sync.
 */
export async function waitFullIsr(
  access: ClusterAccess,
  timeout_ms: number,
  topics?: string[],
): Promise<{ ms: number; behind: string[] }> {
  const t0 = Date.now();
  for (;;) {
    const behind = await outOfSync(access, topics);
    if (behind.length === 0 || Date.now() - t0 >= timeout_ms) return { ms: Date.now() - t0, behind };
    await sleep(500);
  }
}
