{{- /* haproxy.cfg built from .Values.conf: one TCP frontend and backend per service. */ -}}
{{- define "haproxy.cfg" -}}
global
{{- range .Values.conf.global }}
    {{ . }}
{{- end }}

defaults
{{- range .Values.conf.defaults }}
    {{ . }}
{{- end }}
{{- range $name, $service := .Values.conf.services }}

frontend {{ $name }}
    bind {{ $service.bind }}
{{- range ($service.frontend | default list) }}
    {{ . }}
{{- end }}
    default_backend {{ $name }}

backend {{ $name }}
{{- range ($service.backend | default list) }}
    {{ . }}
{{- end }}
{{- range $service.servers }}
    server {{ .name }} {{ .address }} {{ $service.server_opts | default "" }}
{{- end }}
{{- end }}
{{- end -}}
