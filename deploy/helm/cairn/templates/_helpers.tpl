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

{{/* The nodes' pods (not the layout job's): what services, the PDB and the StatefulSets select. */}}
{{- define "cairn.selector" -}}
app.kubernetes.io/name: cairn
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: node
{{- end -}}

{{/* The headless service that names every node: <pod>.<this>.<namespace>.svc.<domain>. */}}
{{- define "cairn.nodesService" -}}
{{- printf "%s-nodes" (include "cairn.fullname" .) -}}
{{- end -}}

{{/* Every node id (= pod name), one per line: <fullname>-<zone>-<ordinal>. */}}
{{- define "cairn.nodeIds" -}}
{{- $root := . -}}
{{- range $zone := .Values.zones -}}
{{- if not (regexMatch "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$" $zone.name) -}}
{{- fail (printf "zone %q: a zone name is lowercase letters, digits and '-' (it names a StatefulSet and its pods)" $zone.name) -}}
{{- end -}}
{{- range $i := until (int $zone.replicas) }}
{{- $id := printf "%s-%s-%d" (include "cairn.fullname" $root) $zone.name $i }}
{{- if gt (len $id) 63 -}}
{{- fail (printf "node id %q is longer than 63 bytes: shorten the release or zone name" $id) -}}
{{- end }}
{{ $id }}
{{- end -}}
{{- end -}}
{{- end -}}
