{{- define "proxy.kubeconfig" -}}
apiVersion: v1
kind: Config
clusters:
  - name: kubernetes
    cluster:
      server: https://{{ .Values.network.kubernetes_netloc }}
      certificate-authority: /etc/kubernetes/proxy/ca.pem
users:
  - name: proxy
    user:
      client-certificate: /etc/kubernetes/proxy/proxy.pem
      client-key: /etc/kubernetes/proxy/proxy-key.pem
contexts:
  - name: proxy
    context:
      cluster: kubernetes
      user: proxy
current-context: proxy
{{- end -}}

{{- define "proxy.config" -}}
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: /etc/kubernetes/proxy/kubeconfig.yaml
clusterCIDR: {{ .Values.network.pod_cidr }}
mode: {{ .Values.network.proxy_mode }}
{{- end -}}
