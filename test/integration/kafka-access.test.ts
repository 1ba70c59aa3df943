/**
 * The broker does not trust its clients blindly: each service authenticates as its own principal
 * (SASL/SCRAM-SHA-512) and ACLs let it write only the topics it owns. A forged transfer event
 * from transaction-service's (or the operator's) credentials is refused by the broker; a client
 * without credentials or with a wrong password cannot connect at all; the owner writes fine.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, it } from "node:test";
import { ProduceAcks, Producer, type SASLOptions, stringSerializers } from "@platformatic/kafka";
import { topicNames } from "../../packages/contracts/messages.ts";
import { type KafkaPrincipal, kafkaPasswordVariable } from "../../packages/kafka/access.ts";

const brokers = (process.env.TEST_KAFKA_BROKERS ?? "127.0.0.1:59092").split(",");
const topics = topicNames(process.env.KAFKA_TOPIC_PREFIX ?? "test.");

function credentialsOf(principal: KafkaPrincipal): SASLOptions {
  const password = process.env[kafkaPasswordVariable(principal)];
  assert.ok(password, `${kafkaPasswordVariable(principal)} is set for the tests`);
  return { mechanism: "SCRAM-SHA-512", username: principal, password };
}

/** Every code, protocol error id and message in a client error and its causes, for matching. */
function describeError(error: unknown): string {
  if (typeof error !== "object" || error === null) return String(error);
  const e = error as {
    code?: unknown;
    apiId?: unknown;
    message?: unknown;
    cause?: unknown;
    errors?: unknown;
  };
  const nested = Array.isArray(e.errors) ? e.errors.map(describeError) : [];
  return [e.code, e.apiId, e.message, ...nested, e.cause === undefined ? "" : describeError(e.cause)]
    .filter((part) => part !== undefined && part !== null && part !== "")
    .join(" | ");
}

/** Sends one forged transfer event (for a transfer nobody knows) as the given client; resolves to the error, if any. */
async function produceEvent(topic: string, sasl: SASLOptions | undefined): Promise<unknown> {
  const producer = new Producer({
    clientId: "kafka-access-test",
    bootstrapBrokers: brokers,
    ...(sasl === undefined ? {} : { sasl }),
    serializers: stringSerializers,
    idempotent: true,
    acks: ProduceAcks.ALL,
    // Few retries: a refusal must show up as an error, not as a client retrying for ever.
    retries: 2,
    retryDelay: 100,
    timeout: 5_000,
    connectTimeout: 2_000,
  });
  const transfer_id = randomUUID();
  const forged = {
    type: "TransferRecorded",
    message_id: randomUUID(),
    transfer_id,
    status: "COMPLETED",
  };
  try {
    await producer.send({ messages: [{ topic, key: transfer_id, value: JSON.stringify(forged) }] });
    return undefined;
  } catch (error) {
    return error;
  } finally {
    await producer.close().catch(() => {});
  }
}

describe("kafka access control", () => {
  it("refuses a transfer event from transaction-service's principal (only the record writer writes events)", async () => {
    const error = await produceEvent(topics.events, credentialsOf("transaction-service"));
    assert.ok(error, "the broker refused the write");
    assert.match(describeError(error), /TOPIC_AUTHORIZATION_FAILED/);
  });

  it("refuses a transfer event from the operator's principal", async () => {
    const error = await produceEvent(topics.events, credentialsOf("operator"));
    assert.ok(error, "the broker refused the write");
    assert.match(describeError(error), /TOPIC_AUTHORIZATION_FAILED/);
  });

  it("refuses a client with a wrong password, and one without credentials", async () => {
    const wrong = await produceEvent(topics.events, {
      ...credentialsOf("transaction-command-service"),
      password: "not-the-password-0123456789",
    });
    assert.ok(wrong, "a wrong password is refused");
    assert.match(describeError(wrong), /SASL authentication failed/);

    const anonymous = await produceEvent(topics.events, undefined);
    assert.ok(anonymous, "a client without credentials is refused");
  });

  it("lets the topic's owner write it (the record writer's principal writes transfer events)", async () => {
    // transaction-service dead-letters this event (no such transfer); nothing else happens.
    const error = await produceEvent(topics.events, credentialsOf("transaction-command-service"));
    assert.equal(error, undefined, describeError(error));
  });
});
