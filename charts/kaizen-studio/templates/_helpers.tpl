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

{{/* Gateway pods' extra egress destinations: gatewayPolicy.egressAllow plus the
in-chart Redis when it runs (JSON list, as the operator and facade read it). */}}
{{- define "kaizen.egressAllow" -}}
{{- $allow := .Values.gatewayPolicy.egressAllow | default list -}}
{{- if .Values.gatewayRedis.inChart.enabled -}}
{{- $redis := dict "namespace" .Release.Namespace "podLabels" (dict "app.kubernetes.io/name" (include "kaizen.name" .) "app.kubernetes.io/instance" .Release.Name "app.kubernetes.io/component" "redis") "ports" (list 6379) -}}
{{- $allow = append $allow $redis -}}
{{- end -}}
{{- toJson $allow -}}
{{- end -}}

{{/* KAIZEN_WORKSPACE_POLICY of the facade (guards.WorkspacePolicy.from_json). */}}
{{- define "kaizen.workspacePolicy" -}}
{{- $w := .Values.workspaces -}}
{{- $egress := dict "enabled" $w.egressPolicy "allow" (include "kaizen.egressAllow" . | fromJsonArray) "deny" (.Values.gatewayPolicy.egressDeny | default list) -}}
{{- toJson (dict "podSecurity" $w.podSecurity "quota" $w.quota "limitRange" $w.limitRange "egress" $egress) -}}
{{- end -}}
