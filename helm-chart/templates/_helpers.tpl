{{- define "bot.name" -}}
{{- default "milvus-pulsar-upgrade-bot" .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "bot.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "bot.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "bot.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The bot's selector is unchanged since chart 0.1.0 (a Deployment's selector is immutable). */}}
{{- define "bot.selector" -}}
app.kubernetes.io/name: {{ include "bot.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Redis has its own name label, so that the bot's selector never matches its pod. */}}
{{- define "bot.redisSelector" -}}
app.kubernetes.io/name: {{ include "bot.name" . }}-redis
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "bot.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "bot.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name: set the ServiceAccount to run as when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Cluster-scoped objects are named after the namespace too: two releases of the same name in
two namespaces must not share a ClusterRole. */}}
{{- define "bot.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "bot.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* BOT_OPERATORS from a list or a comma-separated string. */}}
{{- define "bot.operators" -}}
{{- if kindIs "slice" .Values.operators -}}
{{- join "," .Values.operators -}}
{{- else -}}
{{- .Values.operators | nospace -}}
{{- end -}}
{{- end -}}

{{- define "bot.secretName" -}}
{{- default (include "bot.fullname" .) .Values.slack.existingSecret -}}
{{- end -}}

{{- define "bot.redisName" -}}
{{- printf "%s-redis" (include "bot.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "bot.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "bot.redisImage" -}}
{{- if .Values.redis.image.digest -}}
{{- printf "%s:%s@%s" .Values.redis.image.repository .Values.redis.image.tag .Values.redis.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.redis.image.repository .Values.redis.image.tag -}}
{{- end -}}
{{- end -}}

{{/* Checks the schema cannot express (it sees one value at a time). */}}
{{- define "bot.validate" -}}
{{- $v := .Values -}}
{{- if and (not $v.slack.existingSecret) (not $v.slack.botToken) -}}
{{- fail "slack: set slack.existingSecret (a Secret with SLACK_BOT_TOKEN ...) or slack.botToken" -}}
{{- end -}}
{{- if and (not $v.slack.existingSecret) (not $v.slack.socketMode) (not $v.slack.signingSecret) -}}
{{- fail "slack.signingSecret is required in HTTP mode (or set slack.socketMode=true with slack.appToken)" -}}
{{- end -}}
{{- if and (not $v.slack.existingSecret) $v.slack.socketMode (not $v.slack.appToken) -}}
{{- fail "slack.appToken (xapp-...) is required with slack.socketMode=true" -}}
{{- end -}}
{{- if and $v.slack.appToken (not $v.slack.socketMode) -}}
{{- fail "slack.appToken is set but slack.socketMode is false: set slack.socketMode=true to use Socket Mode" -}}
{{- end -}}
{{- if and $v.ingress.enabled $v.slack.socketMode -}}
{{- fail "ingress.enabled: Socket Mode needs no Ingress (Slack is reached over a websocket); disable one of them" -}}
{{- end -}}
{{- if and $v.ingress.enabled (not $v.service.enabled) -}}
{{- fail "ingress.enabled needs service.enabled=true (the Ingress points at the Service)" -}}
{{- end -}}
{{- if and (not $v.redis.enabled) (not $v.redis.url) (not $v.redis.existingSecret) -}}
{{- fail "redis: set redis.enabled=true (a Redis in the chart), or redis.url / redis.existingSecret for a managed Redis" -}}
{{- end -}}
{{- if and $v.redis.enabled (or $v.redis.url $v.redis.existingSecret) -}}
{{- fail "redis: redis.enabled=true deploys a Redis; unset redis.url / redis.existingSecret, or set redis.enabled=false" -}}
{{- end -}}
{{- if and $v.redis.url $v.redis.existingSecret -}}
{{- fail "redis: set redis.url or redis.existingSecret, not both" -}}
{{- end -}}
{{- if ge (int $v.shutdownGraceSeconds) (int $v.terminationGracePeriodSeconds) -}}
{{- fail "shutdownGraceSeconds (BOT_SHUTDOWN_GRACE_SECONDS) must be below terminationGracePeriodSeconds" -}}
{{- end -}}
{{- if and $v.kubernetes.context (not $v.kubernetes.kubeconfigSecret) -}}
{{- fail "kubernetes.context (KUBE_CONTEXT) needs kubernetes.kubeconfigSecret (in-cluster config has no contexts)" -}}
{{- end -}}
{{- end -}}
