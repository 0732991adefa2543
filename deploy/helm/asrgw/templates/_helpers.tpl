{{/* Names: <release>-asrgw unless the release name holds the chart's name already. */}}
{{- define "asrgw.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "asrgw.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "asrgw.gateway.fullname" -}}
{{- printf "%s-gateway" (include "asrgw.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "asrgw.node.fullname" -}}
{{- printf "%s-node" (include "asrgw.fullname" .) | trunc 52 | trimSuffix "-" }}
{{- end }}

{{- define "asrgw.node.headless" -}}
{{- printf "%s-headless" (include "asrgw.node.fullname" .) }}
{{- end }}

{{- define "asrgw.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels; call with (dict "root" $ "component" "gateway"). */}}
{{- define "asrgw.selectorLabels" -}}
app.kubernetes.io/name: {{ include "asrgw.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{- define "asrgw.labels" -}}
helm.sh/chart: {{ include "asrgw.chart" .root }}
{{ include "asrgw.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: asr-billing-gateway
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* An image reference; call with (dict "root" $ "image" .Values.gateway.image). */}}
{{- define "asrgw.image" -}}
{{- $registry := .image.registry | default .root.Values.global.imageRegistry -}}
{{- $tag := .image.tag | default .root.Chart.AppVersion -}}
{{- if $registry -}}
{{- printf "%s/%s:%s" $registry .image.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end }}

{{- define "asrgw.node.image" -}}
{{- if .Values.node.gpu.enabled -}}
{{- include "asrgw.image" (dict "root" . "image" (merge (dict) .Values.node.gpu.image .Values.node.image)) -}}
{{- else -}}
{{- include "asrgw.image" (dict "root" . "image" .Values.node.image) -}}
{{- end -}}
{{- end }}

{{- define "asrgw.imagePullSecrets" -}}
{{- with .Values.global.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end }}

{{- define "asrgw.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "asrgw.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Secrets: the chart's own, unless an existing one is named. */}}
{{- define "asrgw.secretsName" -}}
{{- include "asrgw.fullname" . }}
{{- end }}

{{- define "asrgw.databaseSecretName" -}}
{{- printf "%s-database" (include "asrgw.fullname" .) }}
{{- end }}

{{/* (dict "root" $ "item" .Values.secrets.nodeSecret) -> secretKeyRef body */}}
{{- define "asrgw.secretKeyRef" -}}
{{- if .item.existingSecret }}
name: {{ .item.existingSecret }}
key: {{ .item.existingSecretKey }}
{{- else }}
name: {{ .name }}
key: {{ .key }}
{{- end }}
{{- end }}

{{- define "asrgw.databaseUrlRef" -}}
{{- include "asrgw.secretKeyRef" (dict "item" .Values.database "name" (include "asrgw.databaseSecretName" .) "key" "database-url") }}
{{- end }}

{{- define "asrgw.redisUrlRef" -}}
{{- include "asrgw.secretKeyRef" (dict "item" .Values.redis "name" (include "asrgw.databaseSecretName" .) "key" "redis-url") }}
{{- end }}

{{- define "asrgw.nodeSecretRef" -}}
{{- include "asrgw.secretKeyRef" (dict "item" .Values.secrets.nodeSecret "name" (include "asrgw.secretsName" .) "key" "node-secret") }}
{{- end }}

{{- define "asrgw.adminJwtSecretRef" -}}
{{- include "asrgw.secretKeyRef" (dict "item" .Values.secrets.adminJwtSecret "name" (include "asrgw.secretsName" .) "key" "admin-jwt-secret") }}
{{- end }}

{{- define "asrgw.metricsTokenRef" -}}
{{- include "asrgw.secretKeyRef" (dict "item" .Values.secrets.metricsToken "name" (include "asrgw.secretsName" .) "key" "metrics-token") }}
{{- end }}

{{/* The nodes the gateway follows: the node StatefulSet's headless Service, then any others. */}}
{{- define "asrgw.gatewayNodes" -}}
{{- $nodes := list -}}
{{- if .Values.node.enabled -}}
{{- $nodes = append $nodes (printf "dns+http://%s.%s.svc.%s:%d" (include "asrgw.node.headless" .) .Release.Namespace .Values.clusterDomain (int .Values.node.port)) -}}
{{- end -}}
{{- $nodes = concat $nodes .Values.gateway.extraNodes -}}
{{- join "," $nodes -}}
{{- end }}

{{/* topologySpreadConstraints with this component's pods as the labelSelector where none is given. */}}
{{- define "asrgw.topologySpread" -}}
{{- $root := .root -}}
{{- $component := .component -}}
{{- $constraints := list -}}
{{- range .constraints }}
{{- $constraint := deepCopy . -}}
{{- if not $constraint.labelSelector }}
{{- $_ := set $constraint "labelSelector" (dict "matchLabels" (include "asrgw.selectorLabels" (dict "root" $root "component" $component) | fromYaml)) -}}
{{- end }}
{{- $constraints = append $constraints $constraint -}}
{{- end }}
{{- with $constraints }}
topologySpreadConstraints:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The chart refuses settings that cannot work. */}}
{{- define "asrgw.validate" -}}
{{- $gatewayReplicas := int .Values.gateway.replicaCount -}}
{{- if .Values.gateway.autoscaling.enabled }}
{{- $gatewayReplicas = int .Values.gateway.autoscaling.maxReplicas -}}
{{- end }}
{{- $sharedJobStorage := or .Values.gateway.jobStorage.existingClaim .Values.gateway.jobStorage.create -}}
{{- if and (gt $gatewayReplicas 1) (not $sharedJobStorage) (not .Values.gateway.jobStorage.acceptUnshared) }}
{{- fail "more than one gateway replica needs job audio storage every replica mounts: set gateway.jobStorage.existingClaim (a ReadWriteMany claim) or gateway.jobStorage.create=true with a ReadWriteMany storage class; or, if /v1/jobs is not used, gateway.jobStorage.acceptUnshared=true" }}
{{- end }}
{{- if and (gt $gatewayReplicas 1) (not .Values.redis.enabled) }}
{{- fail "more than one gateway replica needs Redis (redis.enabled with redis.url or redis.existingSecret), so that rate limits are counted once for all replicas" }}
{{- end }}
{{- if and (not .Values.secrets.adminJwtSecret.enabled) (not .Values.gateway.admin.jwksUrl) }}
{{- fail "the admin API needs secrets.adminJwtSecret.enabled or gateway.admin.jwksUrl" }}
{{- end }}
{{- if and .Values.tests.enabled (not .Values.secrets.adminJwtSecret.enabled) (not .Values.tests.apiKey.existingSecret) }}
{{- fail "tests need secrets.adminJwtSecret.enabled to make a key, or tests.apiKey.existingSecret" }}
{{- end }}
{{- if and .Values.gateway.httpRoute.enabled (not .Values.gateway.httpRoute.parentRefs) }}
{{- fail "gateway.httpRoute.parentRefs names the Gateway to attach to" }}
{{- end }}
{{- if and (not .Values.node.enabled) (not .Values.gateway.extraNodes) }}
{{- fail "the gateway needs nodes: node.enabled, or gateway.extraNodes" }}
{{- end }}
{{- end }}

{{/* Environment every process that speaks to the ledger or mints admin tokens shares. */}}
{{- define "asrgw.gatewayEnv" -}}
- name: BILLING_DATABASE_URL
  valueFrom:
    secretKeyRef:
      {{- include "asrgw.databaseUrlRef" . | trim | nindent 6 }}
- name: GATEWAY_ADMIN_JWT_SECRET
{{- if .Values.secrets.adminJwtSecret.enabled }}
  valueFrom:
    secretKeyRef:
      {{- include "asrgw.adminJwtSecretRef" . | trim | nindent 6 }}
{{- else }}
  value: ""
{{- end }}
- name: GATEWAY_ADMIN_JWT_AUDIENCE
  value: {{ .Values.gateway.admin.jwtAudience | quote }}
- name: GATEWAY_ADMIN_JWT_ISSUER
  value: {{ .Values.gateway.admin.jwtIssuer | quote }}
{{- end }}
