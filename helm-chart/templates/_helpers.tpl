{{- define "bot.fullname" -}}
{{- printf "%s" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- define "bot.labels" -}}
app.kubernetes.io/name: milvus-pulsar-upgrade-bot
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}
{{- define "bot.selector" -}}
app.kubernetes.io/name: milvus-pulsar-upgrade-bot
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
