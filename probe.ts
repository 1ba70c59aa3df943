import { MongoClient } from "mongodb";
import { Consumer, stringDeserializers } from "@platformatic/kafka";
const id = "01a20b40-007c-7c00-a89d-db8728e06c8c";
const c = new MongoClient("mongodb://127.0.0.1:57017/", { serverSelectionTimeoutMS: 3000 });
await c.connect();
console.log(JSON.stringify(await c.db("dps_test").collection<{ _id: string }>("transfers").findOne({ _id: id })));
await c.close();
const consumer = new Consumer({ clientId: "probe", groupId: `probe-${Date.now()}`, bootstrapBrokers: ["127.0.0.1:59092"], deserializers: stringDeserializers });
const stream = await consumer.consume({ topics: ["test.transfer.events", "test.transfer.commands"], mode: "earliest", autocommit: false, maxWaitTime: 200 });
await new Promise<void>((resolve) => {
  let idle = setTimeout(resolve, 5000);
  stream.on("data", (m) => { clearTimeout(idle); idle = setTimeout(resolve, 2000); if (m.key === id) { const v = JSON.parse(m.value ?? "{}"); console.log(m.topic, m.partition, String(m.offset), new Date(Number(m.timestamp)).toISOString(), v.type, v.status ?? v.snapshot?.status); } });
});
await stream.close(); await consumer.close(true);
