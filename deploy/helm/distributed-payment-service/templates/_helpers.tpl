{{/* The prefix of every object: the release's name (or fullnameOverride), short enough that
"<prefix>-transaction-command-service-internal" stays within Kubernetes' 63 characters. */}}
{{- define "dps.fullname" -}}
{{- .Values.fullnameOverride | default .Release.Name | trunc 24 | trimSuffix "-" -}}
{{- end -}}

{{/* Object name of one service: dps.name (dict "root" $ "service" "user-service"). */}}
{{- define "dps.name" -}}
{{- printf "%s-%s" (include "dps.fullname" .root) .service -}}
{{- end -}}

{{- define "dps.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .service }}
{{- end -}}

{{- define "dps.labels" -}}
{{ include "dps.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{/* Public and internal (public + 1000) port of each service. */}}
{{- define "dps.port" -}}
{{- get (dict "user-service" 8000 "transaction-command-service" 8001 "transaction-query-service" 8002 "transaction-service" 8003) . -}}
{{- end -}}
{{- define "dps.internalPort" -}}
{{- add 1000 (include "dps.port" . | atoi) -}}
{{- end -}}

{{/* The variable that carries a service's port: user-service -> USER_SERVICE. */}}
{{- define "dps.envPrefix" -}}
{{- . | upper | replace "-" "_" -}}
{{- end -}}

{{- define "dps.required" -}}
{{- required (printf "%s is required (see values.yaml)" .name) .value -}}
{{- end -}}

{{/*
What one service reads from its environment, as YAML: `config` goes into its ConfigMap, `secret`
into its Secret. Every service gets only the credentials it presents and the digests of those it
checks. Call: include "dps.env" (dict "root" $ "service" "user-service") | fromYaml
*/}}
{{- define "dps.env" -}}
{{- $v := .root.Values -}}
{{- $e := $v.engines -}}
{{- $c := $v.credentials -}}
{{- $p := include "dps.envPrefix" .service -}}
{{- $kafkaConfig := dict "KAFKA_BROKERS" (include "dps.required" (dict "name" "engines.kafkaBrokers" "value" $e.kafkaBrokers)) "KAFKA_SASL_MECHANISM" $e.kafkaSaslMechanism "KAFKA_PARTITIONS" (toString $e.kafkaPartitions) -}}
config:
  HOST: "0.0.0.0"
  {{ $p }}_PORT: {{ include "dps.port" .service | quote }}
  INTERNAL_HOST: "0.0.0.0"
  {{ $p }}_INTERNAL_PORT: {{ include "dps.internalPort" .service | quote }}
  LOG_LEVEL: {{ $v.logLevel | quote }}
  {{- if eq .service "transaction-command-service" }}
  MONGO_DATABASE: {{ $e.mongoDatabase | quote }}
  {{- toYaml $kafkaConfig | nindent 2 }}
  KAFKA_USERNAME: {{ $c.kafkaUsernameTransactionCommandService | quote }}
  {{- else if eq .service "transaction-query-service" }}
  MONGO_DATABASE: {{ $e.mongoDatabase | quote }}
  {{- else if eq .service "transaction-service" }}
  {{- toYaml $kafkaConfig | nindent 2 }}
  KAFKA_USERNAME: {{ $c.kafkaUsernameTransactionService | quote }}
  USER_SERVICE_INTERNAL_URL: {{ printf "http://%s-internal:%s" (include "dps.name" (dict "root" .root "service" "user-service")) (include "dps.internalPort" "user-service") | quote }}
  TRANSACTION_QUERY_SERVICE_URL: {{ printf "http://%s:%s" (include "dps.name" (dict "root" .root "service" "transaction-query-service")) (include "dps.port" "transaction-query-service") | quote }}
  {{- end }}
  {{- with (get $v.services .service).env }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
secret:
  ADMIN_TOKEN_SHA256: {{ include "dps.adminDigest" .root | quote }}
  {{- if eq .service "user-service" }}
  LEDGER_DATABASE_URL: {{ include "dps.required" (dict "name" "engines.ledgerDatabaseUrl" "value" $e.ledgerDatabaseUrl) | quote }}
  LEDGER_TOKEN_SHA256: {{ include "dps.required" (dict "name" "credentials.ledgerToken" "value" $c.ledgerToken) | sha256sum | quote }}
  AUTH_TOKEN_SECRET: {{ include "dps.required" (dict "name" "credentials.authTokenSecret" "value" $c.authTokenSecret) | quote }}
  REDIS_URL: {{ include "dps.required" (dict "name" "engines.redisUrl" "value" $e.redisUrl) | quote }}
  {{- else if eq .service "transaction-command-service" }}
  MONGO_URL: {{ include "dps.required" (dict "name" "engines.mongoUrl" "value" $e.mongoUrl) | quote }}
  KAFKA_PASSWORD: {{ include "dps.required" (dict "name" "credentials.kafkaPasswordTransactionCommandService" "value" $c.kafkaPasswordTransactionCommandService) | quote }}
  {{- else if eq .service "transaction-query-service" }}
  MONGO_URL: {{ include "dps.required" (dict "name" "engines.mongoUrl" "value" ($e.mongoReadUrl | default $e.mongoUrl)) | quote }}
  QUERY_TOKEN_SHA256: {{ include "dps.required" (dict "name" "credentials.queryToken" "value" $c.queryToken) | sha256sum | quote }}
  {{- else if eq .service "transaction-service" }}
  SAGA_DATABASE_URL: {{ include "dps.required" (dict "name" "engines.sagaDatabaseUrl" "value" $e.sagaDatabaseUrl) | quote }}
  REDIS_URL: {{ include "dps.required" (dict "name" "engines.redisUrl" "value" $e.redisUrl) | quote }}
  KAFKA_PASSWORD: {{ include "dps.required" (dict "name" "credentials.kafkaPasswordTransactionService" "value" $c.kafkaPasswordTransactionService) | quote }}
  LEDGER_TOKEN: {{ include "dps.required" (dict "name" "credentials.ledgerToken" "value" $c.ledgerToken) | quote }}
  QUERY_TOKEN: {{ include "dps.required" (dict "name" "credentials.queryToken" "value" $c.queryToken) | quote }}
  AUTH_TOKEN_SECRET: {{ include "dps.required" (dict "name" "credentials.authTokenSecret" "value" $c.authTokenSecret) | quote }}
  {{- end }}
{{- end -}}

{{/* The Secret a service reads: the chart's own, or one named in credentials.existingSecrets. */}}
{{- define "dps.secretName" -}}
{{- get .root.Values.credentials.existingSecrets .service | default (include "dps.name" .) -}}
{{- end -}}

{{/* The operator token's digest, checked: 64 hex digits (quote it in values files). */}}
{{- define "dps.adminDigest" -}}
{{- $digest := include "dps.required" (dict "name" "credentials.adminTokenSha256" "value" .Values.credentials.adminTokenSha256) | lower -}}
{{- if not (regexMatch "^[0-9a-f]{64}$" $digest) -}}
{{- fail "credentials.adminTokenSha256 must be the SHA-256 of the operator token as 64 hex digits, in quotes" -}}
{{- end -}}
{{- $digest -}}
{{- end -}}
