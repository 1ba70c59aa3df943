import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { AclOperations } from "@platformatic/kafka";
import { serviceEnv } from "../../../scripts/stack/env.ts";
import { topicNames } from "../../contracts/messages.ts";
import {
  aclChanges,
  kafkaAcls,
  kafkaGrants,
  kafkaPasswordVariable,
  kafkaPrincipals,
  kafkaSasl,
} from "../access.ts";

describe("kafka access", () => {
  it("lets only the record writer write transfer events, and only transaction-service (and the operator's replay) write commands", () => {
    for (const prefix of ["", "test.", "bench."]) {
      const t = topicNames(prefix);
      const writers = (topic: string) =>
        kafkaPrincipals.filter((p) =>
          kafkaGrants(p, prefix).some(
            ([kind, name, op]) => kind === "topic" && name === topic && op === AclOperations.WRITE,
          ),
        );
      assert.deepEqual(writers(t.events), ["transaction-command-service"]);
      assert.deepEqual(writers(t.commands), ["transaction-service", "operator"]);
    }
  });

  it("connects without SASL only when no mechanism is configured, and refuses a mechanism without credentials", () => {
    assert.equal(kafkaSasl({ KAFKA_SASL_MECHANISM: "", KAFKA_USERNAME: "", KAFKA_PASSWORD: "" }), undefined);
    assert.throws(
      () =>
        kafkaSasl({ KAFKA_SASL_MECHANISM: "scram-sha-512", KAFKA_USERNAME: "operator", KAFKA_PASSWORD: "" }),
      /KAFKA_PASSWORD/,
    );
    assert.deepEqual(
      kafkaSasl({ KAFKA_SASL_MECHANISM: "scram-sha-512", KAFKA_USERNAME: "operator", KAFKA_PASSWORD: "pw" }),
      { mechanism: "SCRAM-SHA-512", username: "operator", password: "pw" },
    );
  });

  it("adds missing bindings and revokes unwanted ones on managed resources only", () => {
    const wanted = kafkaAcls(["test."]);
    const [first, second] = wanted;
    assert.ok(first && second);
    const stale = { ...first, operation: AclOperations.ALTER };
    const foreign = { ...first, resourceName: "someone-elses-topic" };
    const { create, remove } = aclChanges([second, stale, foreign], wanted);
    assert.equal(create.length, wanted.length - 1);
    assert.deepEqual(remove, [stale]);
    assert.deepEqual(aclChanges(wanted, wanted), { create: [], remove: [] });
  });

  it("hands each service only its own Kafka password, none of the others", () => {
    const env = Object.fromEntries(kafkaPrincipals.map((p) => [kafkaPasswordVariable(p), `pw-${p}`]));
    for (const name of ["transaction-service", "transaction-command-service"] as const) {
      const handed = serviceEnv(name, env);
      assert.equal(handed.KAFKA_USERNAME, name);
      assert.equal(handed.KAFKA_PASSWORD, `pw-${name}`);
      for (const p of kafkaPrincipals) assert.equal(handed[kafkaPasswordVariable(p)] ?? "", "");
    }
    for (const name of ["user-service", "transaction-query-service"] as const) {
      const handed = serviceEnv(name, env);
      assert.equal(handed.KAFKA_PASSWORD, "");
      for (const p of kafkaPrincipals) assert.equal(handed[kafkaPasswordVariable(p)] ?? "", "");
    }
  });
});
