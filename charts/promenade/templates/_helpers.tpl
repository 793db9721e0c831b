{{- define "promenade.name" -}}
{{- printf "%s-api" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "promenade.labels" -}}
app.kubernetes.io/name: promenade
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- define "promenade.selector" -}}
app.kubernetes.io/name: promenade
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
