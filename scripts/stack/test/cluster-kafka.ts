// What the cluster suites ask of a Kafka cluster: which broker leads the most partitions, and
// when every partition has all its replicas back in sync (a restarted broker has caught up).
import { setTimeout as sleep } from "node:timers/promises";
import { Admin, type SASLOptions } from "@platformatic/kafka";

export interface ClusterAccess {
  brokers: string[];
  sasl: SASLOptions;
}

interface PartitionState {
  leader: number;
  replicas: number[];
  isr: number[];
}

/** Every partition of the given topics (default: every topic, internal ones included). */
async function partitions(access: ClusterAccess, topics?: string[]): Promise<PartitionState[]> {
  const admin = new Admin({
    clientId: "cluster-chaos",
    bootstrapBrokers: access.brokers,
    sasl: access.sasl,
    timeout: 5_000,
  });
  try {
    const names = topics ?? (await admin.listTopics({ includeInternals: true }));
    const metadata = await admin.metadata({ topics: names, forceUpdate: true });
    return [...metadata.topics.values()].flatMap((t) => [...t.partitions]);
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

/** Waits until every replica of every partition is in sync; the time it took. */
export async function waitFullIsr(
  access: ClusterAccess,
  timeout_ms: number,
  topics?: string[],
): Promise<number> {
  const t0 = Date.now();
  while (Date.now() - t0 < timeout_ms) {
    const all = await partitions(access, topics).catch(() => []);
    if (all.length > 0 && all.every((p) => p.isr.length === p.replicas.length)) return Date.now() - t0;
    await sleep(500);
  }
  throw new Error(`replicas not back in sync within ${timeout_ms} ms`);
}
