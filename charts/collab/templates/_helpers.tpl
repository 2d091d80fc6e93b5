{{/* Names ---------------------------------------------------------------------------------- */}}

{{- define "collab.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The standard fullname: the release name as-is when it already contains the chart name. */}}
{{- define "collab.fullname" -}}
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

{{/* Component names keep room for StatefulSet pod ordinals and revision-hash labels (<= 52). */}}
{{- define "collab.prefix" -}}
{{- include "collab.fullname" . | trunc 44 | trimSuffix "-" }}
{{- end }}

{{- define "collab.workerName" -}}
{{- printf "%s-worker" (include "collab.prefix" .) }}
{{- end }}

{{- define "collab.routerName" -}}
{{- printf "%s-router" (include "collab.prefix" .) }}
{{- end }}

{{- define "collab.minioName" -}}
{{- printf "%s-minio" (include "collab.prefix" .) }}
{{- end }}

{{- define "collab.operatorName" -}}
{{- printf "%s-operator" (include "collab.prefix" .) }}
{{- end }}

{{- define "collab.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "collab.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "collab.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Labels: call with (dict "ctx" $ "component" "worker"). -------------------------------- */}}

{{- define "collab.selectorLabels" -}}
app.kubernetes.io/name: {{ include "collab.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "collab.labels" -}}
helm.sh/chart: {{ include "collab.chart" .ctx }}
{{ include "collab.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: {{ include "collab.name" .ctx }}
{{- end }}

{{/* Image, secrets, storage ---------------------------------------------------------------- */}}

{{- define "collab.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "collab.authSecretName" -}}
{{- default (printf "%s-auth" (include "collab.prefix" .)) .Values.auth.existingSecret }}
{{- end }}

{{- define "collab.storageSecretName" -}}
{{- default (printf "%s-storage" (include "collab.prefix" .)) .Values.storage.existingSecret }}
{{- end }}

{{/* MINIO_ENDPOINT is a bare host name; the port goes separately into MINIO_PORT. */}}
{{- define "collab.storageHost" -}}
{{- if .Values.minio.enabled }}
{{- printf "%s.%s.svc.%s" (include "collab.minioName" .) .Release.Namespace .Values.clusterDomain }}
{{- else }}
{{- .Values.storage.endpoint }}
{{- end }}
{{- end }}

{{- define "collab.storagePort" -}}
{{- if .Values.minio.enabled }}{{ .Values.minio.port | int64 }}{{ else }}{{ .Values.storage.port | int64 }}{{ end }}
{{- end }}

{{- define "collab.storageSecure" -}}
{{- if .Values.minio.enabled }}false{{ else }}{{ .Values.storage.secure }}{{ end }}
{{- end }}

{{/* An env entry read from a Secret: (dict "name" "ADMIN_TOKEN" "secret" $name "key" "admin-token") */}}
{{- define "collab.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ .key }}
{{- end }}

{{/* A key of a generated Secret: the given value, else the value already in the cluster (so
     upgrades keep it), else a new random one. (dict "given" "..." "existing" $data "key" "k" "length" 40) */}}
{{- define "collab.secretValue" -}}
{{- if .given }}
{{- .given | b64enc }}
{{- else if hasKey .existing .key }}
{{- index .existing .key }}
{{- else }}
{{- randAlphaNum (int .length) | b64enc }}
{{- end }}
{{- end }}

{{/* Restart pods when credentials given in values change (generated ones never change). */}}
{{- define "collab.credentialsChecksum" -}}
{{- dict "auth" .Values.auth "storage" .Values.storage | toJson | sha256sum }}
{{- end }}

{{/* The shortest grace period that lets a worker finish both drains. */}}
{{- define "collab.minWorkerGrace" -}}
{{- $drainSeconds := div (add (int .Values.worker.drain.timeoutMs) 999) 1000 }}
{{- add (int .Values.worker.drain.preStopTimeoutSeconds) $drainSeconds 5 }}
{{- end }}

{{/* Cross-value checks the schema cannot express; included by the worker StatefulSet. */}}
{{- define "collab.validate" -}}
{{- $minGrace := include "collab.minWorkerGrace" . | int }}
{{- if lt (int .Values.worker.terminationGracePeriodSeconds) $minGrace }}
{{- fail (printf "worker.terminationGracePeriodSeconds (%d) is too short to drain: it must be at least worker.drain.preStopTimeoutSeconds (%d) + worker.drain.timeoutMs/1000 (%d s, DRAIN_TIMEOUT_MS) + 5 s margin = %d" (int .Values.worker.terminationGracePeriodSeconds) (int .Values.worker.drain.preStopTimeoutSeconds) (div (add (int .Values.worker.drain.timeoutMs) 999) 1000) $minGrace) }}
{{- end }}
{{- if le (int .Values.router.terminationGracePeriodSeconds) (int .Values.router.preStopSleepSeconds) }}
{{- fail (printf "router.terminationGracePeriodSeconds (%d) must be greater than router.preStopSleepSeconds (%d)" (int .Values.router.terminationGracePeriodSeconds) (int .Values.router.preStopSleepSeconds)) }}
{{- end }}
{{- if and (not .Values.minio.enabled) (not .Values.storage.endpoint) }}
{{- fail "storage: set storage.endpoint (an external S3 / MinIO host) or minio.enabled=true; workers on several pods cannot share local storage" }}
{{- end }}
{{- if and .Values.minio.enabled .Values.storage.endpoint }}
{{- fail "storage: storage.endpoint is set but so is minio.enabled; set minio.enabled=false to use the external endpoint" }}
{{- end }}
{{- if and (not .Values.minio.enabled) (not .Values.storage.existingSecret) (or (not .Values.storage.accessKey) (not .Values.storage.secretKey)) }}
{{- fail "storage: an external endpoint needs storage.existingSecret (keys access-key, secret-key) or both storage.accessKey and storage.secretKey" }}
{{- end }}
{{- if and (eq .Values.worker.mode "operator") (or .Values.autoscaling.enabled .Values.autoscaling.keda.enabled) }}
{{- fail "autoscaling.* (HPA / KEDA) scales the worker StatefulSet of worker.mode=statefulset; with worker.mode=operator the operator scales the pool itself: set pool.minWorkers, pool.maxWorkers, pool.sessionsPerWorker and pool.buffer instead" }}
{{- end }}
{{- if gt (int .Values.pool.minWorkers) (int .Values.pool.maxWorkers) }}
{{- fail (printf "pool.minWorkers (%d) is above pool.maxWorkers (%d)" (int .Values.pool.minWorkers) (int .Values.pool.maxWorkers)) }}
{{- end }}
{{- if and .Values.autoscaling.enabled .Values.autoscaling.keda.enabled }}
{{- fail "autoscaling: autoscaling.enabled (HorizontalPodAutoscaler via prometheus-adapter) and autoscaling.keda.enabled (KEDA ScaledObject) both scale the workers; enable only one" }}
{{- end }}
{{- if and .Values.autoscaling.keda.enabled (not .Values.autoscaling.keda.serverAddress) }}
{{- fail "autoscaling.keda.serverAddress is required with autoscaling.keda.enabled (the Prometheus URL KEDA queries)" }}
{{- end }}
{{- if and (or .Values.autoscaling.enabled .Values.autoscaling.keda.enabled) (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail (printf "autoscaling.minReplicas (%d) is above autoscaling.maxReplicas (%d)" (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- end }}
{{- if and .Values.metrics.prometheusRule.enabled (not (.Files.Get "files/prometheus/alerts.yml")) }}
{{- fail "metrics.prometheusRule.enabled needs files/prometheus/alerts.yml in the chart" }}
{{- end }}
{{- end }}

{{/* The worker tunables, the same in both modes (the StatefulSet's container, the CollabPool's
     spec.env); identity, storage and secrets are added by each. */}}
{{- define "collab.workerTuningEnv" -}}
- name: LOG_FORMAT
  value: {{ .Values.config.logFormat | quote }}
- name: WORKSPACE_DIR
  value: /workspace
- name: MAX_MESSAGE_BYTES
  value: {{ .Values.config.maxMessageBytes | int64 | quote }}
- name: DRAIN_TIMEOUT_MS
  value: {{ .Values.worker.drain.timeoutMs | int64 | quote }}
- name: FLUSH_INTERVAL_MS
  value: {{ .Values.worker.flushIntervalMs | int64 | quote }}
- name: SESSION_IDLE_MS
  value: {{ .Values.worker.sessionIdleMs | int64 | quote }}
- name: COOLDOWN_MS
  value: {{ .Values.worker.cooldownMs | int64 | quote }}
- name: LOG_INTERVAL_MS
  value: {{ .Values.worker.logIntervalMs | int64 | quote }}
- name: MAX_UPDATE_BYTES
  value: {{ .Values.worker.maxUpdateBytes | int64 | quote }}
- name: MAX_DOC_BYTES
  value: {{ .Values.worker.maxDocBytes | int64 | quote }}
{{- end }}

{{/* Pod-level fields every workload shares. */}}
{{- define "collab.podCommon" -}}
serviceAccountName: {{ include "collab.serviceAccountName" . }}
automountServiceAccountToken: false
{{- with .Values.podSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "collab.metricsAnnotations" -}}
{{- if .ctx.Values.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | int64 | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}

