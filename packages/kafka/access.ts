/**
 * Who may do what on the broker. Each service authenticates as its own principal (SASL/SCRAM),
 * and the broker's ACLs let it touch only the topics and consumer group it needs, so a
 * compromised or buggy service cannot forge another service's messages (transaction-service
 * cannot write transfer.events; nobody but transaction-service writes transfer.commands, except
 * the operator replaying a dead letter).
 *
 * Topics are created by the services that use them (ensureTopics at start), so each service may
 * CREATE exactly the three topic names of its prefix and nothing else: it works the same against
 * any broker, the partition count stays service configuration, and a test reset that deletes the
 * topics needs no extra step. A CREATE grant on a literal name cannot make any other topic.
 */
import {
  type Acl,
  AclOperations,
  type AclOperationValue,
  AclPermissionTypes,
  ResourcePatternTypes,
  ResourceTypes,
  type SASLOptions,
} from "@platformatic/kafka";
import { z } from "zod";
import { env } from "#packages/config/index.ts";
import { topicNames } from "#packages/contracts/messages.ts";

/** The broker's principals: one per service that talks to Kafka, the operator's tools, the broker admin. */
export const kafkaPrincipals = [
  "transaction-service",
  "transaction-command-service",
  "operator",
  "admin",
] as const;
export type KafkaPrincipal = (typeof kafkaPrincipals)[number];

/** The variable in secrets.env holding a principal's password: KAFKA_PASSWORD_TRANSACTION_SERVICE... */
export function kafkaPasswordVariable(principal: KafkaPrincipal): string {
  return `KAFKA_PASSWORD_${principal.toUpperCase().replaceAll("-", "_")}`;
}

/** What a Kafka client reads from its environment to authenticate (added to each service's config shape). */
export const kafkaAuthEnv = {
  /** SASL mechanism towards the broker; empty = no SASL (a plain broker). */
  KAFKA_SASL_MECHANISM: z.enum(["", "scram-sha-512", "scram-sha-256"]).default(""),
  KAFKA_USERNAME: env.string(""),
  KAFKA_PASSWORD: env.string(""),
};

export interface KafkaAuthConfig {
  KAFKA_SASL_MECHANISM: "" | "scram-sha-512" | "scram-sha-256";
  KAFKA_USERNAME: string;
  KAFKA_PASSWORD: string;
}

/** The client's SASL options, or undefined for a plain broker. A mechanism without credentials is a configuration error. */
export function kafkaSasl(config: KafkaAuthConfig): SASLOptions | undefined {
  if (config.KAFKA_SASL_MECHANISM === "") return undefined;
  if (config.KAFKA_USERNAME === "" || config.KAFKA_PASSWORD === "") {
    throw new Error(
      `invalid configuration: KAFKA_SASL_MECHANISM=${config.KAFKA_SASL_MECHANISM} needs KAFKA_USERNAME and KAFKA_PASSWORD`,
    );
  }
  return {
    mechanism: config.KAFKA_SASL_MECHANISM === "scram-sha-512" ? "SCRAM-SHA-512" : "SCRAM-SHA-256",
    username: config.KAFKA_USERNAME,
    password: config.KAFKA_PASSWORD,
  };
}

/**
 * The operator's tools (dead letters, tests) authenticate as `operator` unless told otherwise:
 * KAFKA_USERNAME/KAFKA_PASSWORD if set, else the operator password the stack generated.
 */
export function operatorKafkaSasl(source: NodeJS.ProcessEnv = process.env): SASLOptions | undefined {
  const mechanism = kafkaAuthEnv.KAFKA_SASL_MECHANISM.parse(source.KAFKA_SASL_MECHANISM || "");
  return kafkaSasl({
    KAFKA_SASL_MECHANISM: mechanism,
    KAFKA_USERNAME: source.KAFKA_USERNAME || "operator",
    KAFKA_PASSWORD: source.KAFKA_PASSWORD || source[kafkaPasswordVariable("operator")] || "",
  });
}

/** The consumer group name prefix of the operator's dead-letter readers (one throwaway group per listing). */
export const deadLetterReaderGroupPrefix = "dead-letters-reader-";

/**
 * The consumer group name prefix of transaction-command-service's dead-letter tally (one group per
 * process, so every copy counts every letter for its /metrics).
 */
export function deadLetterTallyGroupPrefix(topic_prefix: string): string {
  return `${topic_prefix}transaction-command-service-dead-letters-`;
}

type Grant = [resource: "topic" | "group", name: string, operation: AclOperationValue];

/** Every grant of one principal for one topic prefix ("", "test.", "bench."). The admin is a super user and needs none. */
export function kafkaGrants(principal: KafkaPrincipal, prefix: string): Grant[] {
  const t = topicNames(prefix);
  const { READ, WRITE, CREATE } = AclOperations;
  const createAll: Grant[] = [t.commands, t.events, t.deadLetters].map((name) => ["topic", name, CREATE]);
  switch (principal) {
    case "transaction-service":
      return [
        ["topic", t.commands, WRITE],
        ["topic", t.events, READ],
        // It dead-letters the events it cannot read.
        ["topic", t.deadLetters, WRITE],
        ["group", `${prefix}transaction-service`, READ],
        ...createAll,
      ];
    case "transaction-command-service":
      return [
        ["topic", t.commands, READ],
        ["topic", t.events, WRITE],
        ["topic", t.deadLetters, WRITE],
        // It counts the dead letters, open and replayed (its groups: kafkaAcls).
        ["topic", t.deadLetters, READ],
        ["group", `${prefix}transaction-command-service`, READ],
        ...createAll,
      ];
    case "operator":
      return [
        ["topic", t.deadLetters, READ],
        // A replay sends a refused command back, then marks the letter replayed on the same topic.
        ["topic", t.commands, WRITE],
        ["topic", t.deadLetters, WRITE],
      ];
    case "admin":
      return [];
  }
}

/** The ACL bindings for every principal and topic prefix (groups of the operator are by name prefix). */
export function kafkaAcls(prefixes: readonly string[]): Acl[] {
  const allow = (
    resource: "topic" | "group",
    name: string,
    operation: AclOperationValue,
    principal: string,
    literal = true,
  ): Acl => ({
    resourceType: resource === "topic" ? ResourceTypes.TOPIC : ResourceTypes.GROUP,
    resourceName: name,
    resourcePatternType: literal ? ResourcePatternTypes.LITERAL : ResourcePatternTypes.PREFIXED,
    principal: `User:${principal}`,
    host: "*",
    operation,
    permissionType: AclPermissionTypes.ALLOW,
  });
  const acls = kafkaPrincipals.flatMap((principal) =>
    [...new Set(prefixes)].flatMap((prefix) =>
      kafkaGrants(principal, prefix).map(([resource, name, op]) => allow(resource, name, op, principal)),
    ),
  );
  acls.push(allow("group", deadLetterReaderGroupPrefix, AclOperations.READ, "operator", false));
  for (const prefix of new Set(prefixes)) {
    const tally = deadLetterTallyGroupPrefix(prefix);
    acls.push(allow("group", tally, AclOperations.READ, "transaction-command-service", false));
  }
  return acls;
}

function aclKey(acl: Acl): string {
  return [
    acl.resourceType,
    acl.resourceName,
    acl.resourcePatternType,
    acl.principal,
    acl.host,
    acl.operation,
    acl.permissionType,
  ].join("\u0000");
}

/**
 * What to change so that the broker holds exactly `wanted` on the resources `wanted` names: the
 * missing bindings, and the bindings on those resources that are no longer wanted (a grant taken
 * out of kafkaGrants is revoked at the next start). Bindings on other resources are left alone.
 */
export function aclChanges(existing: Acl[], wanted: Acl[]): { create: Acl[]; remove: Acl[] } {
  const resource = (acl: Acl) =>
    `${acl.resourceType}\u0000${acl.resourceName}\u0000${acl.resourcePatternType}`;
  const managed = new Set(wanted.map(resource));
  const wantedKeys = new Set(wanted.map(aclKey));
  const existingKeys = new Set(existing.map(aclKey));
  return {
    create: wanted.filter((acl) => !existingKeys.has(aclKey(acl))),
    remove: existing.filter((acl) => managed.has(resource(acl)) && !wantedKeys.has(aclKey(acl))),
  };
}
