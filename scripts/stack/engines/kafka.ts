// Apache Kafka 4.1.1, single node in KRaft mode (broker + controller in one JVM), run straight from
// the jars Maven fetches (scripts/stack/kafka-pom.xml) with the machine's Java 17.
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { Admin } from "@platformatic/kafka";
import { aptInstall, type Engine, logFileOf, makeEngine, pidFileOf, say } from "../engine.ts";
import { cacheDir, confDir, envPort, logsDir, repoRoot, dataDir as stackDataDir } from "../paths.ts";
import { canConnect, readPidFile, removeFile, run, spawnDetached, which, writePidFile } from "../proc.ts";

export const kafkaVersion = "4.1.1";
export const kafkaHost = "127.0.0.1";
export const kafkaPort = envPort("DPS_KAFKA_PORT", 59092);
const controllerPort = envPort("DPS_KAFKA_CONTROLLER_PORT", 59093);

const pomFile = join(repoRoot, "scripts", "stack", "kafka-pom.xml");
const installDir = join(cacheDir, `kafka-${kafkaVersion}`);
const libsDir = join(installDir, "libs");
/** Holds a hash of the POM that filled libs/: a changed POM means a fresh fetch. */
const stampFile = join(installDir, "pom.sha1");

const dataDir = join(stackDataDir, "kafka");
const kafkaConfDir = join(confDir, "kafka");
const serverProps = join(kafkaConfDir, "server.properties");
const log4jConf = join(kafkaConfDir, "log4j2.xml");
const pidFile = pidFileOf("kafka");
const logFile = logFileOf("kafka");

const classPath = `${libsDir}/*`; // the JVM expands dir/* itself (no shell involved)

function pomHash(): string {
  return createHash("sha1").update(readFileSync(pomFile)).digest("hex");
}

async function install(): Promise<void> {
  if (existsSync(stampFile) && readFileSync(stampFile, "utf8").trim() === pomHash()) return;
  if (which("java") === undefined || which("mvn") === undefined) {
    await aptInstall(["openjdk-17-jre-headless", "maven"], join(logsDir, "install-kafka.log"));
  }
  say("kafka", `fetching Kafka ${kafkaVersion} jars from Maven Central into ${libsDir}`);
  // Fill a temp dir and rename it, so an interrupted fetch never looks complete.
  const tmp = `${libsDir}.tmp`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(installDir, { recursive: true });
  await run(
    "mvn",
    [
      "-q",
      "-B",
      "-f",
      pomFile,
      "dependency:copy-dependencies",
      `-DoutputDirectory=${tmp}`,
      "-DincludeScope=runtime",
    ],
    { logFile: join(logsDir, "install-kafka.log") },
  );
  rmSync(libsDir, { recursive: true, force: true });
  renameSync(tmp, libsDir);
  writeFileSync(stampFile, `${pomHash()}\n`);
}

function writeConfig(): void {
  mkdirSync(kafkaConfDir, { recursive: true });
  mkdirSync(dataDir, { recursive: true });
  const props: Record<string, string | number | boolean> = {
    "process.roles": "broker,controller",
    "node.id": 1,
    // Static quorum of one: nothing to bootstrap, and `format` needs no --standalone.
    "controller.quorum.voters": `1@${kafkaHost}:${controllerPort}`,
    listeners: `PLAINTEXT://${kafkaHost}:${kafkaPort},CONTROLLER://${kafkaHost}:${controllerPort}`,
    "advertised.listeners": `PLAINTEXT://${kafkaHost}:${kafkaPort}`,
    "controller.listener.names": "CONTROLLER",
    "inter.broker.listener.name": "PLAINTEXT",
    "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
    "log.dirs": dataDir,
    "num.partitions": 6,
    "default.replication.factor": 1,
    "min.insync.replicas": 1,
    // One node: internal topics cannot have more replicas than that.
    "offsets.topic.replication.factor": 1,
    "offsets.topic.num.partitions": 10, // default 50 is slow to load on a 2-core box
    "transaction.state.log.replication.factor": 1,
    "transaction.state.log.min.isr": 1,
    "transaction.state.log.num.partitions": 10,
    "share.coordinator.state.topic.replication.factor": 1,
    "share.coordinator.state.topic.min.isr": 1,
    "group.initial.rebalance.delay.ms": 0,
    // The services create their topics (partitions, configs) themselves; a typo must not make one.
    "auto.create.topics.enable": false,
    "delete.topic.enable": true,
    "num.network.threads": 2,
    "num.io.threads": 4,
    "log.retention.hours": 168,
    // Durability note: a single broker has no replicas; Kafka leaves flushing to the OS page cache,
    // which survives a crash of the JVM (kill -9) but not of the machine. PostgreSQL holds the
    // money state; the services' outbox re-publishes anything Kafka may have lost.
  };
  const text = Object.entries(props)
    .map(([k, v]) => `${k}=${v}`)
    .join("\n");
  writeFileSync(
    serverProps,
    `# Written by scripts/stack/engines/kafka.ts at every start; edits are overwritten.\n${text}\n`,
  );

  // Kafka's logging goes to .data/logs/kafka.log (rolled), never to the terminal.
  writeFileSync(
    log4jConf,
    `<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <RollingFile name="file" fileName="${logFile}" filePattern="${logFile}.%i">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
      <Policies><SizeBasedTriggeringPolicy size="20 MB"/></Policies>
      <DefaultRolloverStrategy max="3"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Root level="INFO"><AppenderRef ref="file"/></Root>
    <Logger name="state.change.logger" level="WARN"/>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="org.apache.kafka.clients" level="WARN"/>
    <Logger name="org.apache.kafka.common.utils.AppInfoParser" level="WARN"/>
  </Loggers>
</Configuration>
`,
  );
}

function jvmArgs(): string[] {
  const heap = (process.env.DPS_KAFKA_HEAP_OPTS || "-Xms256m -Xmx768m").split(" ").filter((s) => s !== "");
  return [
    ...heap,
    // Kafka's own launcher defaults (kafka-run-class.sh).
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
    `-Dlog4j2.configurationFile=${log4jConf}`,
    `-Dkafka.logs.dir=${logsDir}`,
    "-cp",
    classPath,
  ];
}

/** `kafka-storage.sh format`, once per data dir: writes meta.properties with a new cluster id. */
async function formatOnce(): Promise<void> {
  if (existsSync(join(dataDir, "meta.properties"))) return;
  // A Kafka cluster id is a 16-byte UUID in URL-safe base64 without padding (what `random-uuid` prints).
  const clusterId = randomBytes(16).toString("base64url");
  await run(
    "java",
    [
      ...jvmArgs(),
      "kafka.tools.StorageTool",
      "format",
      // One word: an id that starts with "-" (1 in 64) would be taken for an option.
      `--cluster-id=${clusterId}`,
      "-c",
      serverProps,
      "--ignore-formatted",
    ],
    {
      logFile,
    },
  );
  say("kafka", `formatted ${dataDir} (cluster id ${clusterId})`);
}

/** A real metadata round trip, not just an open port. */
async function healthy(): Promise<boolean> {
  if (!(await canConnect(kafkaHost, kafkaPort))) return false;
  const admin = new Admin({
    clientId: "dps-stack-health",
    bootstrapBrokers: [`${kafkaHost}:${kafkaPort}`],
    retries: 0,
    timeout: 3000,
    connectTimeout: 2000,
  });
  try {
    await admin.listTopics();
    return true;
  } catch {
    return false;
  } finally {
    await admin.close().catch(() => {});
  }
}

/** Deletes every topic whose name starts with prefix, and waits until they are gone (test resets). */
export async function deleteTopicsWithPrefix(prefix: string): Promise<string[]> {
  if (prefix === "") throw new Error("refusing to delete every topic");
  const admin = new Admin({ clientId: "dps-stack-admin", bootstrapBrokers: [`${kafkaHost}:${kafkaPort}`] });
  try {
    const doomed = (await admin.listTopics()).filter((t) => t.startsWith(prefix));
    if (doomed.length === 0) return [];
    await admin.deleteTopics({ topics: doomed });
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      const left = (await admin.listTopics()).filter((t) => doomed.includes(t));
      if (left.length === 0) break;
      await sleep(200);
    }
    return doomed;
  } finally {
    await admin.close().catch(() => {});
  }
}

export const kafka: Engine = makeEngine({
  name: "kafka",
  host: kafkaHost,
  port: kafkaPort,
  dataDir,
  logFile,
  url: `${kafkaHost}:${kafkaPort}`,
  cmdlineMarker: serverProps,
  startTimeoutMs: 90_000,
  // A controlled shutdown normally takes a few seconds.
  stopTimeoutMs: 30_000,
  install,
  launch: async () => {
    writeConfig();
    await formatOnce();
    writePidFile(
      pidFile,
      spawnDetached("java", [...jvmArgs(), "kafka.Kafka", serverProps], { logFile, cwd: logsDir }),
    );
  },
  readPid: () => readPidFile(pidFile),
  clearPid: () => removeFile(pidFile),
  healthy,
});
