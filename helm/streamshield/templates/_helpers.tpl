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

{{/* The Secret holding the coordinator's agent token (key `token`), in each Flink namespace. */}}
{{- define "streamshield.tokenSecret" -}}
{{- if .Values.inject.tokenSecret -}}
{{- .Values.inject.tokenSecret -}}
{{- else if .Values.coordinator.clusters -}}
streamshield-agent-token
{{- end -}}
{{- end -}}

{{/* The coordinator address the injected agents get: the value, else (with coordinator.clusters) the Service of
     the pod's own cluster's coordinator in the pod's namespace ({cluster-id} is the pod's `app` label). */}}
{{- define "streamshield.injectCoordinator" -}}
{{- if .Values.inject.coordinator -}}
{{- .Values.inject.coordinator -}}
{{- else if .Values.coordinator.clusters -}}
{{- printf "streamshield-coordinator-{cluster-id}:%v" .Values.coordinator.agentsPort -}}
{{- end -}}
{{- end -}}

{{/* The objects of one cluster's coordinator: streamshield-coordinator-<cluster name> (the argument). */}}
{{- define "streamshield.coordinatorName" -}}
{{- printf "streamshield-coordinator-%s" . | trunc 63 | trimSuffix "-" -}}
{{- end -}}
