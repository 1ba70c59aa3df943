// Apache Kafka 4.1.1 in KRaft mode, run straight from the jars Maven fetches
// (scripts/stack/kafka-pom.xml) with the machine's Java 17: one node (broker + controller in one
// JVM), or a cluster of N nodes whose first three are also the KRaft controllers (kafkaCluster()).
//
// Nobody is trusted blindly: clients authenticate with SASL/SCRAM-SHA-512 (one principal per
// service, see packages/kafka/access.ts), and the StandardAuthorizer denies whatever no ACL
// allows. The controller listener takes SASL/PLAIN as `admin`, with the password in the broker's
// own (mode 600) config, so the stack can set SCRAM credentials even in a data dir that has none.
import { createHash, pbkdf2Sync, randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import {
  type Acl,
  AclOperations,
  AclPermissionTypes,
  Admin,
  AuthenticationError,
  alterUserScramCredentialsV0,
  Connection,
  describeQuorumV2,
  ResourcePatternTypes,
  ResourceTypes,
  type SASLOptions,
  ScramMechanisms,
} from "@platformatic/kafka";
import {
  aclChanges,
  type KafkaPrincipal,
  kafkaAcls,
  kafkaPasswordVariable,
  kafkaPrincipals,
} from "#packages/kafka/access.ts";
import { topicReplication } from "#packages/kafka/index.ts";
import { assert } from "#packages/runtime/assert.ts";
import { backoff_ms } from "#packages/runtime/index.ts";
import {
  aptInstall,
  type Engine,
  type KafkaNodeName,
  logFileOf,
  makeEngine,
  pidFileOf,
  say,
} from "../engine.ts";
import { secrets } from "../env.ts";
import { cacheDir, confDir, envPort, logsDir, repoRoot, dataDir as stackDataDir } from "../paths.ts";
import { canConnect, readPidFile, removeFile, run, spawnDetached, which, writePidFile } from "../proc.ts";

export const kafkaVersion = "4.1.1";
export const kafkaHost = "127.0.0.1";
export const kafkaPort = envPort("DPS_KAFKA_PORT", 59092);
const controllerPort = envPort("DPS_KAFKA_CONTROLLER_PORT", 59093);
/** Node k of a cluster (k = 0, 1, ...) listens on the base ports + 100·k: 59092, 59192, 59292. */
export const KAFKA_NODE_PORT_STEP = 100;
/** A KRaft quorum of three survives one controller's death; more would only slow its writes. */
const controllers_max = 3;

const pomFile = join(repoRoot, "scripts", "stack", "kafka-pom.xml");
const installDir = join(cacheDir, `kafka-${kafkaVersion}`);
const libsDir = join(installDir, "libs");
/** Holds a hash of the POM that filled libs/: a changed POM means a fresh fetch. */
const stampFile = join(installDir, "pom.sha1");

/** Where one node of a single broker or of a cluster keeps its ports, files and data. */
export interface KafkaNode {
  name: "kafka" | KafkaNodeName;
  /** 0-based position in the cluster; node.id is index + 1. */
  index: number;
  /** Nodes in its cluster (1: the single broker). */
  count: number;
  port: number;
  controllerPort: number;
  dataDir: string;
  confDir: string;
  serverProps: string;
  log4jConf: string;
  pidFile: string;
  logFile: string;
}

/** The single broker keeps `.data/kafka`; a cluster's nodes `.data/kafka-cluster/node-<k>` (a quorum is fixed at format time). */
export function kafkaNode(index: number, count: number): KafkaNode {
  assert(Number.isInteger(count), `kafka node count ${count} must be an integer`);
  assert(count >= 1, `kafka node count ${count} must be at least 1`);
  assert(index >= 0, `kafka node ${index} of ${count} must not be negative`);
  assert(index < count, `kafka node ${index} of ${count} is past the last`);
  const name = count === 1 ? "kafka" : (`kafka-${index + 1}` as const);
  const nodeConfDir = join(confDir, name);
  return {
    name,
    index,
    count,
    port: kafkaPort + KAFKA_NODE_PORT_STEP * index,
    controllerPort: controllerPort + KAFKA_NODE_PORT_STEP * index,
    dataDir: count === 1 ? join(stackDataDir, "kafka") : join(clusterDir, `node-${index + 1}`),
    confDir: nodeConfDir,
    serverProps: join(nodeConfDir, "server.properties"),
    log4jConf: join(nodeConfDir, "log4j2.xml"),
    pidFile: pidFileOf(name),
    logFile: logFileOf(name),
  };
}

const clusterDir = join(stackDataDir, "kafka-cluster");
/** Every node of a cluster is formatted with the same cluster id, kept here. */
const clusterIdFile = join(clusterDir, "cluster-id");

const isController = (node: KafkaNode): boolean => node.index < controllers_max;
const nodesOf = (node: KafkaNode): KafkaNode[] =>
  Array.from({ length: node.count }, (_, k) => kafkaNode(k, node.count));
/** host:port of every broker of the node's cluster, for clients' bootstrap lists. */
export const kafkaBrokerList = (node: KafkaNode): string[] =>
  nodesOf(node).map((n) => `${kafkaHost}:${n.port}`);

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

/** The password of one principal, from the stack's secrets (.data/secrets.env or the environment). */
function passwordOf(principal: KafkaPrincipal): string {
  const password = (secrets(process.env) as Record<string, string>)[kafkaPasswordVariable(principal)] ?? "";
  // It is written into JAAS lines between double quotes: keep it to characters that need no escaping.
  if (!/^[A-Za-z0-9_.~+/-]{16,}$/.test(password)) {
    throw new Error(`${kafkaPasswordVariable(principal)} must be 16+ characters of A-Z a-z 0-9 _ . ~ + / -`);
  }
  return password;
}

/** The broker's super user, as the stack's own clients present it (health, topic resets, ACL setup). */
function adminSasl(): SASLOptions {
  return { mechanism: "SCRAM-SHA-512", username: "admin", password: passwordOf("admin") };
}

function securityProps(): Record<string, string> {
  const admin = passwordOf("admin");
  return {
    "listener.security.protocol.map": "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
    "sasl.enabled.mechanisms": "SCRAM-SHA-512",
    "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
    "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config": `org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="${admin}";`,
    // SCRAM credentials live in the metadata log, which the controller listener cannot depend on:
    // PLAIN with the one admin user, both as the broker's client and as the controller's check.
    "sasl.mechanism.controller.protocol": "PLAIN",
    "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
    "listener.name.controller.plain.sasl.jaas.config": `org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="${admin}" user_admin="${admin}";`,
    "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "allow.everyone.if.no.acl.found": "false",
    "super.users": "User:admin",
  };
}

/** The node's server.properties entries that depend on its place in the cluster. */
function placementProps(node: KafkaNode): Record<string, string | number> {
  const voters = nodesOf(node)
    .filter(isController)
    .map((n) => `${n.index + 1}@${kafkaHost}:${n.controllerPort}`)
    .join(",");
  const broker = `SASL_PLAINTEXT://${kafkaHost}:${node.port}`;
  // Internal topics as the services' own (packages/kafka topicReplication): 3 copies, 2 in sync.
  const { replicas, min_insync_replicas } = topicReplication(node.count);
  return {
    "process.roles": isController(node) ? "broker,controller" : "broker",
    "node.id": node.index + 1,
    // A static quorum: nothing to bootstrap, and `format` needs no --standalone.
    "controller.quorum.voters": voters,
    listeners: isController(node) ? `${broker},CONTROLLER://${kafkaHost}:${node.controllerPort}` : broker,
    "advertised.listeners": broker,
    "log.dirs": node.dataDir,
    "default.replication.factor": replicas,
    "min.insync.replicas": min_insync_replicas,
    "offsets.topic.replication.factor": replicas,
    "transaction.state.log.replication.factor": replicas,
    "transaction.state.log.min.isr": min_insync_replicas,
    "share.coordinator.state.topic.replication.factor": replicas,
    "share.coordinator.state.topic.min.isr": min_insync_replicas,
    // The controller lets a broker go only once its session expires (default 9 s): in a cluster,
    // that is when a killed broker's partitions get new leaders; and a broker killed and started
    // again is refused as a duplicate until its old session ends, so a lone broker's restart after
    // kill -9 took 9 s more than a clean one. Six heartbeats per session, as the consumers'.
    "broker.session.timeout.ms": 3000,
    "broker.heartbeat.interval.ms": 500,
  };
}

function writeConfig(node: KafkaNode): void {
  mkdirSync(node.confDir, { recursive: true });
  mkdirSync(node.dataDir, { recursive: true });
  const props: Record<string, string | number | boolean> = {
    ...placementProps(node),
    "controller.listener.names": "CONTROLLER",
    "inter.broker.listener.name": "SASL_PLAINTEXT",
    ...securityProps(),
    "num.partitions": 6,
    "offsets.topic.num.partitions": 10, // default 50 is slow to load on a 2-core box
    "transaction.state.log.num.partitions": 10,
    "group.initial.rebalance.delay.ms": 0,
    // The services' consumers use a 3 s session so a killed copy's partitions move within seconds
    // (packages/kafka CONSUMER_SESSION_TIMEOUT_MS); the default floor of 6 s would refuse it.
    "group.min.session.timeout.ms": 1000,
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
  // It holds the admin password.
  writeFileSync(
    node.serverProps,
    `# Written by scripts/stack/engines/kafka.ts at every start; edits are overwritten.\n${text}\n`,
    { mode: 0o600 },
  );
  chmodSync(node.serverProps, 0o600);

  // Kafka's logging goes to .data/logs/kafka.log (rolled), never to the terminal.
  const logFile = node.logFile;
  writeFileSync(
    node.log4jConf,
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

function jvmArgs(node: KafkaNode): string[] {
  const heap = (process.env.DPS_KAFKA_HEAP_OPTS || defaultHeap(node)).split(" ").filter((s) => s !== "");
  return [
    // Only the client compiler (C1): on a box of two cores the optimising compiler (C2) spent a
    // third of the broker's CPU compiling for minutes after each start, more than its faster
    // code saved at this load. Set -XX:TieredStopAtLevel=4 in DPS_KAFKA_HEAP_OPTS to get it back.
    "-XX:TieredStopAtLevel=1",
    ...heap,
    // Kafka's own launcher defaults (kafka-run-class.sh).
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
    `-Dlog4j2.configurationFile=${node.log4jConf}`,
    `-Dkafka.logs.dir=${logsDir}`,
    "-cp",
    classPath,
  ];
}

/** The cluster id to format a node with: a new one for a single node, the cluster's shared one otherwise. */
function clusterIdFor(node: KafkaNode): string {
  // A Kafka cluster id is a 16-byte UUID in URL-safe base64 without padding (what `random-uuid` prints).
  if (node.count === 1) return randomBytes(16).toString("base64url");
  if (!existsSync(clusterIdFile)) {
    mkdirSync(clusterDir, { recursive: true });
    try {
      // Exclusive create: the nodes format at once, and the first one's id must win.
      writeFileSync(clusterIdFile, `${randomBytes(16).toString("base64url")}\n`, { flag: "wx" });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    }
  }
  return readFileSync(clusterIdFile, "utf8").trim();
}

/** `kafka-storage.sh format`, once per data dir: writes meta.properties with the cluster id. */
async function formatOnce(node: KafkaNode): Promise<void> {
  if (existsSync(join(node.dataDir, "meta.properties"))) return;
  const clusterId = clusterIdFor(node);
  await run(
    "java",
    [
      ...jvmArgs(node),
      "kafka.tools.StorageTool",
      "format",
      // One word: an id that starts with "-" (1 in 64) would be taken for an option.
      `--cluster-id=${clusterId}`,
      "-c",
      node.serverProps,
      "--ignore-formatted",
    ],
    {
      logFile: node.logFile,
    },
  );
  say(node.name, `formatted ${node.dataDir} (cluster id ${clusterId})`);
}

function adminClient(
  clientId: string,
  extra: { retries?: number; timeout?: number } = {},
  brokers: string[] = [`${kafkaHost}:${kafkaPort}`],
): Admin {
  return new Admin({
    clientId,
    bootstrapBrokers: brokers,
    sasl: adminSasl(),
    connectTimeout: 2000,
    ...extra,
  });
}

/** True for the client's refusal of our credentials (the broker answered, it just does not know them yet). */
function isAuthFailure(error: unknown): boolean {
  if (typeof error !== "object" || error === null) return false;
  const e = error as { code?: unknown; cause?: unknown; errors?: unknown };
  if (e.code === AuthenticationError.code) return true;
  if (Array.isArray(e.errors) && e.errors.some(isAuthFailure)) return true;
  return isAuthFailure(e.cause);
}

/**
 * A real metadata round trip as admin, not just an open port. A broker that refuses the admin's
 * SCRAM login is up too: a data dir formatted before the credentials existed has none until
 * afterStart sets them.
 */
async function healthy(node: KafkaNode): Promise<boolean> {
  if (!(await canConnect(kafkaHost, node.port))) return false;
  const admin = adminClient("dps-stack-health", { retries: 0, timeout: 3000 }, [`${kafkaHost}:${node.port}`]);
  try {
    await admin.listTopics();
    return true;
  } catch (error) {
    return isAuthFailure(error);
  } finally {
    await admin.close().catch(() => {});
  }
}

const scramIterations = 8192;

/**
 * Sets every principal's SCRAM-SHA-512 credential to the password in the stack's secrets, through
 * the controller listener (PLAIN as admin), so it works whether or not the data dir already has
 * credentials, and a changed password in secrets.env takes effect at the next start.
 */
async function upsertScramCredentials(node: KafkaNode): Promise<void> {
  // Only the active controller takes the change: ask each controller of the quorum in turn.
  let lastError: unknown;
  for (const controller of nodesOf(node).filter(isController)) {
    try {
      await upsertScramCredentialsAt(controller.controllerPort);
      return;
    } catch (error) {
      lastError = error;
    }
  }
  throw lastError;
}

async function upsertScramCredentialsAt(port: number): Promise<void> {
  const connection = new Connection("dps-stack-scram", {
    connectTimeout: 5000,
    requestTimeout: 10_000,
    sasl: { mechanism: "PLAIN", username: "admin", password: passwordOf("admin") },
  });
  try {
    await connection.connect(kafkaHost, port);
    const upsertions = kafkaPrincipals.map((name) => {
      const salt = randomBytes(32);
      // SCRAM's Hi() is PBKDF2 with the mechanism's HMAC (RFC 5802); the broker stores only this.
      const saltedPassword = pbkdf2Sync(passwordOf(name), salt, scramIterations, 64, "sha512");
      return {
        name,
        mechanism: ScramMechanisms.SCRAM_SHA_512,
        iterations: scramIterations,
        salt,
        saltedPassword,
      };
    });
    const answer = await alterUserScramCredentialsV0.api.async(connection, [], upsertions);
    const failed = answer.results.filter((r) => r.errorCode !== 0);
    if (failed.length > 0) {
      throw new Error(
        `kafka refused SCRAM credentials: ${failed.map((r) => `${r.user}: ${r.errorMessage}`).join("; ")}`,
      );
    }
  } finally {
    await connection.close().catch(() => {});
  }
}

/** The topic prefixes whose topics the principals may use: `npm start`'s, the test and bench stacks', and the caller's. */
function topicPrefixes(): string[] {
  return ["", "test.", "bench.", process.env.KAFKA_TOPIC_PREFIX ?? ""];
}

/** Every ACL binding on the broker, one entry per binding. */
async function allAcls(admin: Admin): Promise<Acl[]> {
  const { ANY } = ResourceTypes;
  const resources = await admin.describeAcls({
    filter: {
      resourceType: ANY,
      resourceName: null,
      resourcePatternType: ResourcePatternTypes.ANY,
      principal: null,
      host: null,
      operation: AclOperations.ANY,
      permissionType: AclPermissionTypes.ANY,
    },
  });
  return resources.flatMap(({ acls, ...target }) => acls.map((permission) => ({ ...target, ...permission })));
}

async function syncAcls(admin: Admin): Promise<void> {
  const { create, remove } = aclChanges(await allAcls(admin), kafkaAcls(topicPrefixes()));
  if (remove.length > 0) await admin.deleteAcls({ filters: remove });
  if (create.length > 0) await admin.createAcls({ creations: create });
  if (remove.length + create.length > 0)
    say("kafka", `ACLs: ${create.length} granted, ${remove.length} revoked`);
}

/** Credentials, then ACLs brought to exactly what packages/kafka/access.ts grants. Runs after every start. */
async function ensureAccess(node: KafkaNode): Promise<void> {
  // The broker learns the credentials from the metadata log a moment later; a cluster's quorum
  // may still be electing its controller.
  const deadline = Date.now() + 30_000;
  for (let attempt = 1; ; attempt++) {
    try {
      await upsertScramCredentials(node);
      break;
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await sleep(backoff_ms(attempt, 200, 2000));
    }
  }
  for (let attempt = 1; ; attempt++) {
    const admin = adminClient("dps-stack-acls", { timeout: 10_000 }, kafkaBrokerList(node));
    try {
      await syncAcls(admin);
      return;
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await sleep(backoff_ms(attempt, 200, 2000));
    } finally {
      await admin.close().catch(() => {});
    }
  }
}

/** The node.id of the cluster's active KRaft controller (the metadata quorum's leader), from the first controller that answers. */
export async function activeControllerId(node: KafkaNode): Promise<number> {
  let lastError: unknown = new Error("no controller answered");
  for (const controller of nodesOf(node).filter(isController)) {
    const connection = new Connection("dps-stack-quorum", {
      connectTimeout: 2000,
      requestTimeout: 5000,
      sasl: { mechanism: "PLAIN", username: "admin", password: passwordOf("admin") },
    });
    try {
      await connection.connect(kafkaHost, controller.controllerPort);
      const answer = await describeQuorumV2.api.async(connection, [
        { topicName: "__cluster_metadata", partitions: [{ partitionIndex: 0 }] },
      ]);
      const leader = answer.topics[0]?.partitions[0]?.leaderId;
      if (leader !== undefined && leader > 0) return leader;
    } catch (error) {
      lastError = error;
    } finally {
      await connection.close().catch(() => {});
    }
  }
  throw lastError;
}

/** Deletes every topic whose name starts with prefix, and waits until they are gone (test resets). */
export async function deleteTopicsWithPrefix(prefix: string): Promise<string[]> {
  if (prefix === "") throw new Error("refusing to delete every topic");
  const admin = adminClient("dps-stack-admin");
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

/**
 * Heap of one JVM: a single broker gets room; three brokers (and eight services) share a 2-core,
 * few-GB box, and an idle broker of this size runs in well under 256 MB of heap.
 */
function defaultHeap(node: KafkaNode): string {
  return node.count === 1 ? "-Xms256m -Xmx768m" : "-Xms128m -Xmx384m";
}

function nodeEngine(node: KafkaNode): Engine {
  return makeEngine({
    name: node.name,
    host: kafkaHost,
    port: node.port,
    dataDir: node.dataDir,
    logFile: node.logFile,
    url: `${kafkaHost}:${node.port}`,
    cmdlineMarker: node.serverProps,
    // A cluster's node is healthy only once a quorum of controllers is up, and all three JVMs
    // start at once: on a busy 2-core box that alone took over 90 s.
    startTimeoutMs: node.count === 1 ? 90_000 : 180_000,
    // A controlled shutdown normally takes a few seconds.
    stopTimeoutMs: 30_000,
    install,
    launch: async () => {
      writeConfig(node);
      await formatOnce(node);
      writePidFile(
        node.pidFile,
        spawnDetached("java", [...jvmArgs(node), "kafka.Kafka", node.serverProps], {
          logFile: node.logFile,
          cwd: logsDir,
        }),
      );
    },
    readPid: () => readPidFile(node.pidFile),
    clearPid: () => removeFile(node.pidFile),
    healthy: () => healthy(node),
    afterStart: () => ensureAccess(node),
  });
}

export const kafka: Engine = nodeEngine(kafkaNode(0, 1));

/**
 * The nodes of a cluster of `count` brokers (`npm start -- --brokers 3`), each an engine of its
 * own (started, watched and killed one by one). They must be started together: a node is healthy
 * only once a majority of the controllers is up.
 */
export function kafkaCluster(count: number): Engine[] {
  return Array.from({ length: count }, (_, k) => nodeEngine(kafkaNode(k, count)));
}
