#!/bin/bash
# Creates the topics and each principal's ACLs (idempotent: runs on every `docker compose up`).
# Each service may touch only its own topics and consumer group; the operator reads everything.
set -euo pipefail
: "${KAFKA_PASSWORD_ADMIN:?}" "${KAFKA_PARTITIONS:?}"
bootstrap=kafka:9092
cat >/tmp/admin.properties <<PROPERTIES
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="${KAFKA_PASSWORD_ADMIN}";
PROPERTIES
admin=(--bootstrap-server "$bootstrap" --command-config /tmp/admin.properties)
for topic in transfer.commands transfer.events transfer.dead-letters; do
  /opt/kafka/bin/kafka-topics.sh "${admin[@]}" --create --if-not-exists --topic "$topic" \
    --partitions "$KAFKA_PARTITIONS" --replication-factor 1
done
acl() { /opt/kafka/bin/kafka-acls.sh "${admin[@]}" --add --force "$@" >/dev/null; }
for principal in transaction-service transaction-command-service operator; do
  acl --allow-principal "User:$principal" --operation Describe --topic transfer. --resource-pattern-type prefixed
done
acl --allow-principal User:transaction-service --operation Write --topic transfer.commands
acl --allow-principal User:transaction-service --operation Read --topic transfer.events
acl --allow-principal User:transaction-service --operation Read --group transaction-service
acl --allow-principal User:transaction-command-service --operation Read --topic transfer.commands
acl --allow-principal User:transaction-command-service --operation Write --topic transfer.events
acl --allow-principal User:transaction-command-service --operation Write --topic transfer.dead-letters
acl --allow-principal User:transaction-command-service --operation Read --group transaction-command-service
acl --allow-principal User:operator --operation Read --topic transfer. --resource-pattern-type prefixed
acl --allow-principal User:operator --operation Read --group '*'
echo "topics and ACLs in place"
