import { Admin } from "@platformatic/kafka";
const admin = new Admin({ clientId: "probe", bootstrapBrokers: ["127.0.0.1:59092"] });
const ends = await admin.listOffsets({ topics: [{ name: "test.transfer.commands", partitions: [0,1,2,3,4,5].map((p) => ({ partitionIndex: p, timestamp: -1n })) }, { name: "test.transfer.events", partitions: [0,1,2,3,4,5].map((p) => ({ partitionIndex: p, timestamp: -1n })) }] } as never);
const end = new Map<string, number>();
for (const t of ends as Array<{ name: string; partitions: Array<{ partitionIndex: number; offset: bigint }> }>) for (const p of t.partitions) end.set(`${t.name}:${p.partitionIndex}`, Number(p.offset));
for (const [g, topic] of [["test.transaction-command-service", "test.transfer.commands"], ["test.transaction-service", "test.transfer.events"]]) {
  const [o] = await admin.listConsumerGroupOffsets({ groups: [g as string] });
  const lags = (o?.topics[0]?.partitions ?? []).map((p) => `${p.partitionIndex}:${end.get(`${topic}:${p.partitionIndex}`)! - Number(p.committedOffset)}`);
  console.log(g, lags.join(" "));
}
const groups = await admin.describeGroups({ groups: ["test.transaction-command-service", "test.transaction-service"] });
for (const [id, g] of groups) console.log(id, (g as { state?: string }).state, (g as { members?: Map<string, unknown> }).members?.size);
await admin.close();
