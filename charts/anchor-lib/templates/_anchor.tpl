{{- /*
Shared pieces of the anchor pattern. Each chart that follows it calls them with a dict:
  root   the chart's top-level context (.)
  name   object name prefix, e.g. "kubernetes-apiserver"
  extra  (configmap only, optional) more files rendered by the chart, name -> content
The chart's values provide images.tags.anchor, images.pull_policy, labels.anchor.*,
anchor.period and anchor.enable_cleanup; files/ holds the anchor programs (bundled at build
time) and the static pod manifest templates.
*/ -}}

{{- define "anchor-lib.labels" -}}
application: {{ .name }}
component: anchor
{{- end -}}

{{- define "anchor-lib.configmap" -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .name }}-anchor
  namespace: {{ .root.Release.Namespace }}
  labels:
{{ include "anchor-lib.labels" . | indent 4 }}
data:
{{ (.root.Files.Glob "files/*").AsConfig | indent 2 }}
{{- range $name, $content := (.extra | default dict) }}
  {{ $name }}: |
{{ $content | indent 4 }}
{{- end }}
{{- end -}}

{{- define "anchor-lib.secret" -}}
apiVersion: v1
kind: Secret
metadata:
  name: {{ .name }}-anchor
  namespace: {{ .root.Release.Namespace }}
  labels:
{{ include "anchor-lib.labels" . | indent 4 }}
type: Opaque
data:
  values.json: {{ .root.Values | toJson | b64enc }}
{{- end -}}

{{- define "anchor-lib.daemonset" -}}
{{- $values := .root.Values -}}
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: {{ .name }}-anchor
  namespace: {{ .root.Release.Namespace }}
  labels:
{{ include "anchor-lib.labels" . | indent 4 }}
spec:
  selector:
    matchLabels:
{{ include "anchor-lib.labels" . | indent 6 }}
  template:
    metadata:
      labels:
{{ include "anchor-lib.labels" . | indent 8 }}
      annotations:
        checksum/values: {{ $values | toJson | sha256sum }}
    spec:
      hostNetwork: true
      priorityClassName: system-node-critical
      terminationGracePeriodSeconds: 30
      nodeSelector:
        {{ $values.labels.anchor.node_selector_key }}: {{ $values.labels.anchor.node_selector_value | quote }}
      tolerations:
        - operator: Exists
      containers:
        - name: anchor
          image: {{ $values.images.tags.anchor }}
          imagePullPolicy: {{ $values.images.pull_policy }}
          env:
            - name: NODE_NAME
              valueFrom:
                fieldRef:
                  fieldPath: spec.nodeName
            - name: NODE_IP
              valueFrom:
                fieldRef:
                  fieldPath: status.hostIP
          command:
            - python3
            - /anchor/anchor.py
            - run
            - --values=/anchor-secrets/values.json
            - --templates=/anchor
            - --root=/host
            - --var=node.name=$(NODE_NAME)
            - --var=node.ip=$(NODE_IP)
            - --period={{ $values.anchor.period }}
            - --stop-file=/tmp/stop
            {{- if $values.anchor.enable_cleanup }}
            - --cleanup
            {{- end }}
          lifecycle:
            preStop:
              exec:
                command: ["touch", "/tmp/stop"]
          volumeMounts:
            - name: host
              mountPath: /host
            - name: anchor
              mountPath: /anchor
              readOnly: true
            - name: secrets
              mountPath: /anchor-secrets
              readOnly: true
      volumes:
        - name: host
          hostPath:
            path: /
        - name: anchor
          configMap:
            name: {{ .name }}-anchor
            defaultMode: 0555
        - name: secrets
          secret:
            secretName: {{ .name }}-anchor
            defaultMode: 0400
{{- end -}}
