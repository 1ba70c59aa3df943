#!/bin/bash
# Starts a single-node Apache Kafka in KRaft mode (broker and controller in one process) with
# SASL/SCRAM-SHA-512 for clients and ACLs on. The SCRAM users are written into the storage when
# it is formatted (once, on a new volume), so no unauthenticated bootstrap step is needed.
set -euo pipefail
: "${KAFKA_CLUSTER_ID:?}" "${KAFKA_PASSWORD_ADMIN:?}" "${KAFKA_PASSWORD_OPERATOR:?}"
: "${KAFKA_PASSWORD_TRANSACTION_SERVICE:?}" "${KAFKA_PASSWORD_TRANSACTION_COMMAND_SERVICE:?}"
config=/tmp/server.properties
cat >"$config" <<PROPERTIES
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@localhost:9093
listeners=SASL_PLAINTEXT://:9092,CONTROLLER://localhost:9093
advertised.listeners=SASL_PLAINTEXT://kafka:9092
listener.security.protocol.map=SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=SASL_PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="${KAFKA_PASSWORD_ADMIN}";
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
# The controller listener is loopback only and unauthenticated (the broker in this process).
super.users=User:admin;User:ANONYMOUS
allow.everyone.if.no.acl.found=false
auto.create.topics.enable=false
log.dirs=/var/lib/kafka/data
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
# The services' consumers ask for a 3 s session (a dead copy's partitions move within seconds);
# the broker's default floor of 6 s would refuse them.
group.min.session.timeout.ms=1000
# A broker killed and started again is refused as a duplicate until its old session ends
# (default 9 s); six heartbeats per 3 s session, as the consumers'.
broker.session.timeout.ms=3000
broker.heartbeat.interval.ms=500
PROPERTIES
# The client settings of the admin principal, for the healthcheck and the init job.
cat >/tmp/admin.properties <<PROPERTIES
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="${KAFKA_PASSWORD_ADMIN}";
PROPERTIES
scram() { echo "SCRAM-SHA-512=[name=$1,password=$2]"; }
/opt/kafka/bin/kafka-storage.sh format --ignore-formatted --cluster-id "$KAFKA_CLUSTER_ID" --config "$config" \
  --add-scram "$(scram admin "$KAFKA_PASSWORD_ADMIN")" \
  --add-scram "$(scram operator "$KAFKA_PASSWORD_OPERATOR")" \
  --add-scram "$(scram transaction-service "$KAFKA_PASSWORD_TRANSACTION_SERVICE")" \
  --add-scram "$(scram transaction-command-service "$KAFKA_PASSWORD_TRANSACTION_COMMAND_SERVICE")"
exec /opt/kafka/bin/kafka-server-start.sh "$config"
