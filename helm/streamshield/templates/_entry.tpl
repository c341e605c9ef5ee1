{{/* What every webhook entry shares: where it calls, how it fails, how long it waits. */}}
{{- define "streamshield.entry" -}}
clientConfig:
  service:
    name: {{ .name }}
    namespace: {{ .ns }}
    path: {{ .path }}
    port: 443
  {{- if .caBundle }}
  caBundle: {{ .caBundle }}
  {{- end }}
failurePolicy: {{ .v.failurePolicy }}
sideEffects: None
timeoutSeconds: {{ .v.timeoutSeconds }}
admissionReviewVersions: [v1]
reinvocationPolicy: Never
matchPolicy: Equivalent
{{- end -}}
