{{/* The release's name, cut to leave room for "-<zone>-<ordinal>" in a 63-byte node id. */}}
{{- define "cairn.fullname" -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "cairn.labels" -}}
app.kubernetes.io/name: cairn
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "cairn.selector" -}}
app.kubernetes.io/name: cairn
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The headless service that names every node: <pod>.<this>.<namespace>.svc.<domain>. */}}
{{- define "cairn.nodesService" -}}
{{- printf "%s-nodes" (include "cairn.fullname" .) -}}
{{- end -}}

{{/* Every node id (= pod name), one per line: <fullname>-<zone>-<ordinal>. */}}
{{- define "cairn.nodeIds" -}}
{{- $root := . -}}
{{- range $zone := .Values.zones -}}
{{- range $i := until (int $zone.replicas) }}
{{ include "cairn.fullname" $root }}-{{ $zone.name }}-{{ $i }}
{{- end -}}
{{- end -}}
{{- end -}}
