{{/* The release's name for every object: <release>-streamshield, or the release name when it already says so. */}}
{{- define "streamshield.fullname" -}}
{{- if contains "streamshield" .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-streamshield" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "streamshield.webhook" -}}
{{- printf "%s-webhook" (include "streamshield.fullname" .) -}}
{{- end -}}

{{- define "streamshield.labels" -}}
app.kubernetes.io/name: streamshield
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "streamshield.webhookSelector" -}}
app.kubernetes.io/name: streamshield
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: webhook
{{- end -}}

{{- define "streamshield.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The pods the webhook is for: Flink's JobManagers and TaskManagers as native Kubernetes (and the operator) label them. */}}
{{- define "streamshield.flinkPods" -}}
- key: component
  operator: In
  values: [jobmanager, taskmanager]
- key: type
  operator: In
  values: [flink-native-kubernetes, flink-standalone-kubernetes]
{{- end -}}
