{{/* Names and labels */}}
{{- define "herald.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "herald.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "herald.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "herald.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: herald
{{- end -}}

{{/* selector labels of one component: (dict "ctx" $ "component" "bridge") */}}
{{- define "herald.selectorLabels" -}}
app.kubernetes.io/name: {{ include "herald.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "herald.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "herald.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "herald.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "herald.configMapName" -}}
{{- default (printf "%s-config" (include "herald.fullname" .)) .Values.config.existingConfigMap -}}
{{- end -}}

{{/* bearer token / HMAC key files: "file:/etc/herald/auth/bearer/k1,file:..." */}}
{{- define "herald.secretFiles" -}}
{{- $out := list -}}
{{- range .keys -}}
{{- $out = append $out (printf "file:%s/%s" $.dir .) -}}
{{- end -}}
{{- join "," $out -}}
{{- end -}}

{{- define "herald.authConfigured" -}}
{{- $a := .Values.bridge.auth -}}
{{- if or (and $a.bearerTokensSecret.name $a.bearerTokensSecret.keys) (and $a.hmacKeysSecret.name $a.hmacKeysSecret.keys) (and .Values.bridge.https.enabled .Values.bridge.https.clientCaKey) -}}
true
{{- end -}}
{{- end -}}

{{- define "herald.kafkaSecrets" -}}
{{- $k := .Values.kafka -}}
{{- if or (and $k.sasl.mechanism (ne $k.sasl.mechanism "OAUTHBEARER") $k.sasl.passwordSecret.name) (and (eq $k.sasl.mechanism "OAUTHBEARER") $k.sasl.oauthbearer.clientSecretSecret.name) $k.tls.caSecret.name $k.tls.clientCertSecret.name $k.tls.keyPasswordSecret.name -}}
true
{{- end -}}
{{- end -}}

{{/* Environment of the bridge and the worker: herald.* settings, Kafka, authentication */}}
{{- define "herald.env" -}}
{{- $k := .Values.kafka -}}
{{- $a := .Values.bridge.auth -}}
- name: POSTEE_CFG
  value: /config/cfg.yaml
- name: KAFKA_BOOTSTRAP_SERVERS
  value: {{ required "kafka.bootstrapServers is required" $k.bootstrapServers | quote }}
- name: HERALD_TOPIC_PREFIX
  value: {{ .Values.herald.topicPrefix | quote }}
- name: HERALD_PARTITIONS
  value: {{ .Values.herald.partitions | quote }}
- name: HERALD_REPLICATION_FACTOR
  value: {{ .Values.herald.replicationFactor | quote }}
- name: HERALD_GROUP
  value: {{ .Values.herald.consumerGroup | quote }}
- name: HERALD_ENGINE
  value: {{ .Values.herald.engine | quote }}
{{- if .Values.herald.opaUrl }}
- name: HERALD_OPA_URL
  value: {{ .Values.herald.opaUrl | quote }}
{{- end }}
- name: POSTEE_DEBUG
  value: {{ ternary "true" "false" .Values.herald.debug | quote }}
- name: HERALD_LOG_FORMAT
  value: {{ .Values.herald.logFormat | quote }}
- name: HERALD_KAFKA_SECURITY_PROTOCOL
  value: {{ $k.securityProtocol | quote }}
{{- if eq $k.sasl.mechanism "OAUTHBEARER" }}
{{- $o := $k.sasl.oauthbearer }}
- name: HERALD_KAFKA_SASL_MECHANISM
  value: OAUTHBEARER
- name: HERALD_KAFKA_OAUTHBEARER_CLIENT_ID
  value: {{ required "kafka.sasl.oauthbearer.clientId is required with OAUTHBEARER" $o.clientId | quote }}
- name: HERALD_KAFKA_OAUTHBEARER_TOKEN_ENDPOINT_URL
  value: {{ required "kafka.sasl.oauthbearer.tokenEndpointUrl is required with OAUTHBEARER" $o.tokenEndpointUrl | quote }}
{{- if $o.scope }}
- name: HERALD_KAFKA_OAUTHBEARER_SCOPE
  value: {{ $o.scope | quote }}
{{- end }}
{{- $_ := required "kafka.sasl.oauthbearer.clientSecretSecret.name is required with OAUTHBEARER" $o.clientSecretSecret.name }}
- name: HERALD_KAFKA_OAUTHBEARER_CLIENT_SECRET
  value: file:/etc/herald/kafka/oauthbearer-client-secret
{{- else if $k.sasl.mechanism }}
- name: HERALD_KAFKA_SASL_MECHANISM
  value: {{ $k.sasl.mechanism | quote }}
- name: HERALD_KAFKA_SASL_USERNAME
  value: {{ required "kafka.sasl.username is required with kafka.sasl.mechanism" $k.sasl.username | quote }}
{{- $_ := required "kafka.sasl.passwordSecret.name is required with kafka.sasl.mechanism" $k.sasl.passwordSecret.name }}
- name: HERALD_KAFKA_SASL_PASSWORD
  value: file:/etc/herald/kafka/sasl-password
{{- end }}
{{- if $k.tls.caSecret.name }}
- name: HERALD_KAFKA_SSL_CA_LOCATION
  value: /etc/herald/kafka/ca.crt
{{- end }}
{{- if $k.tls.clientCertSecret.name }}
- name: HERALD_KAFKA_SSL_CERTIFICATE_LOCATION
  value: /etc/herald/kafka/client.crt
- name: HERALD_KAFKA_SSL_KEY_LOCATION
  value: /etc/herald/kafka/client.key
{{- end }}
{{- if $k.tls.keyPasswordSecret.name }}
- name: HERALD_KAFKA_SSL_KEY_PASSWORD
  value: file:/etc/herald/kafka/key-password
{{- end }}
- name: HERALD_KAFKA_SSL_ENDPOINT_IDENTIFICATION
  value: {{ ternary "true" "false" $k.tls.endpointIdentification | quote }}
{{- if and $a.bearerTokensSecret.name $a.bearerTokensSecret.keys }}
- name: HERALD_AUTH_BEARER_TOKENS
  value: {{ include "herald.secretFiles" (dict "dir" "/etc/herald/auth/bearer" "keys" $a.bearerTokensSecret.keys) | quote }}
{{- end }}
{{- if and $a.hmacKeysSecret.name $a.hmacKeysSecret.keys }}
- name: HERALD_AUTH_HMAC_KEYS
  value: {{ include "herald.secretFiles" (dict "dir" "/etc/herald/auth/hmac" "keys" $a.hmacKeysSecret.keys) | quote }}
{{- end }}
{{- if $a.allowUnauthenticated }}
- name: HERALD_ALLOW_UNAUTHENTICATED
  value: "true"
{{- end }}
{{- with .Values.herald.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Volumes of both: config, templates, filters, /tmp, Kafka and auth secrets */}}
{{- define "herald.volumes" -}}
{{- $k := .Values.kafka -}}
{{- $a := .Values.bridge.auth -}}
- name: config
  configMap:
    name: {{ include "herald.configMapName" . }}
    items:
      - key: cfg.yaml
        path: cfg.yaml
{{- if .Values.config.templates }}
- name: templates
  configMap:
    name: {{ include "herald.fullname" . }}-templates
{{- end }}
{{- if .Values.config.regoFilters }}
- name: rego-filters
  configMap:
    name: {{ include "herald.fullname" . }}-rego-filters
{{- end }}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if include "herald.kafkaSecrets" . }}
- name: kafka-secrets
  projected:
    defaultMode: 0440
    sources:
      {{- if and $k.sasl.mechanism (ne $k.sasl.mechanism "OAUTHBEARER") $k.sasl.passwordSecret.name }}
      - secret:
          name: {{ $k.sasl.passwordSecret.name }}
          items:
            - key: {{ $k.sasl.passwordSecret.key }}
              path: sasl-password
      {{- end }}
      {{- if and (eq $k.sasl.mechanism "OAUTHBEARER") $k.sasl.oauthbearer.clientSecretSecret.name }}
      - secret:
          name: {{ $k.sasl.oauthbearer.clientSecretSecret.name }}
          items:
            - key: {{ $k.sasl.oauthbearer.clientSecretSecret.key }}
              path: oauthbearer-client-secret
      {{- end }}
      {{- if $k.tls.caSecret.name }}
      - secret:
          name: {{ $k.tls.caSecret.name }}
          items:
            - key: {{ $k.tls.caSecret.key }}
              path: ca.crt
      {{- end }}
      {{- if $k.tls.clientCertSecret.name }}
      - secret:
          name: {{ $k.tls.clientCertSecret.name }}
          items:
            - key: {{ $k.tls.clientCertSecret.certKey }}
              path: client.crt
            - key: {{ $k.tls.clientCertSecret.keyKey }}
              path: client.key
      {{- end }}
      {{- if $k.tls.keyPasswordSecret.name }}
      - secret:
          name: {{ $k.tls.keyPasswordSecret.name }}
          items:
            - key: {{ $k.tls.keyPasswordSecret.key }}
              path: key-password
      {{- end }}
{{- end }}
{{- if and $a.bearerTokensSecret.name $a.bearerTokensSecret.keys }}
- name: auth-bearer
  secret:
    secretName: {{ $a.bearerTokensSecret.name }}
    defaultMode: 0440
    items:
      {{- range $a.bearerTokensSecret.keys }}
      - key: {{ . }}
        path: {{ . }}
      {{- end }}
{{- end }}
{{- if and $a.hmacKeysSecret.name $a.hmacKeysSecret.keys }}
- name: auth-hmac
  secret:
    secretName: {{ $a.hmacKeysSecret.name }}
    defaultMode: 0440
    items:
      {{- range $a.hmacKeysSecret.keys }}
      - key: {{ . }}
        path: {{ . }}
      {{- end }}
{{- end }}
{{- end -}}

{{- define "herald.volumeMounts" -}}
{{- $a := .Values.bridge.auth -}}
- name: config
  mountPath: /config
  readOnly: true
{{- if .Values.config.templates }}
- name: templates
  mountPath: /server/rego-templates/custom
  readOnly: true
{{- end }}
{{- if .Values.config.regoFilters }}
- name: rego-filters
  mountPath: /server/rego-filters
  readOnly: true
{{- end }}
- name: tmp
  mountPath: /tmp
{{- if include "herald.kafkaSecrets" . }}
- name: kafka-secrets
  mountPath: /etc/herald/kafka
  readOnly: true
{{- end }}
{{- if and $a.bearerTokensSecret.name $a.bearerTokensSecret.keys }}
- name: auth-bearer
  mountPath: /etc/herald/auth/bearer
  readOnly: true
{{- end }}
{{- if and $a.hmacKeysSecret.name $a.hmacKeysSecret.keys }}
- name: auth-hmac
  mountPath: /etc/herald/auth/hmac
  readOnly: true
{{- end }}
{{- end -}}

{{/* Pod-template annotations: a config change rolls the pods */}}
{{- define "herald.podAnnotations" -}}
checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- end -}}
