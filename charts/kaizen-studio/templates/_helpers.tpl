{{- define "kaizen.name" -}}kaizen-studio{{- end -}}

{{- define "kaizen.fullname" -}}
{{- if contains "kaizen" .Release.Name -}}{{ .Release.Name | trunc 40 | trimSuffix "-" }}{{- else -}}{{ printf "%s-kaizen" .Release.Name | trunc 40 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "kaizen.labels" -}}
app.kubernetes.io/name: {{ include "kaizen.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kaizen-studio
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "kaizen.selector" -}}
app.kubernetes.io/name: {{ include "kaizen.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kaizen.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "kaizen.operator" -}}{{ include "kaizen.fullname" . }}-operator{{- end -}}
{{- define "kaizen.api" -}}{{ include "kaizen.fullname" . }}-api{{- end -}}

{{/* Hardened container defaults shared by every container. */}}
{{- define "kaizen.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
