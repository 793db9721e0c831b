"""Malformed sites: every mistake is reported with its exact file, line, document and path.

Each test writes a small valid site into a temporary directory, breaks one thing in one
file, loads it with ``load_site`` and checks the problem. Expected lines are found by
searching the written file for the broken text, so they are independent of the code under test.
"""

import pytest

from promenade.documents import check_envelopes, load_site, parse_stream
from promenade.errors import Problem, PromenadeError
from promenade.validation import validate

META = "{schema: metadata/Document/v1, name: %s, storagePolicy: cleartext, " \
       "layeringDefinition: {abstract: false, layer: site}}"

GENESIS = f"""\
schema: promenade/Genesis/v1
metadata: {META % "genesis"}
data:
  hostname: n0
  ip: 192.168.77.10
  labels:
    dynamic:
      - kubernetes-apiserver=enabled
  images:
    armada: quay.io/airshipit/armada:latest
    kubernetes:
      apiserver: registry.k8s.io/kube-apiserver:v1.33.5
      controller-manager: registry.k8s.io/kube-controller-manager:v1.33.5
      etcd: quay.io/coreos/etcd:v3.5.12
      etcdctl: quay.io/airshipit/porthole-etcdctl-utility:latest
      scheduler: registry.k8s.io/kube-scheduler:v1.33.5
  files:
    - path: /etc/genesis/extra.conf
      mode: 0444
      content: hello
"""


def node(name, ip):
    return f"""\
schema: promenade/KubernetesNode/v1
metadata: {META % name}
data:
  hostname: {name}
  ip: {ip}
  join_ip: 192.168.77.10
  labels:
    dynamic:
      - kubernetes-etcd=enabled
"""


HOST_SYSTEM = f"""\
schema: promenade/HostSystem/v1
metadata: {META % "host-system"}
data:
  systemd_units:
    kube-cgroup:
      enable: true
  files:
    - path: /usr/local/bin/kubelet
      mode: 0555
      tar_url: http://127.0.0.1:8080/kubernetes-node.tar.gz
      tar_path: kubernetes/node/bin/kubelet
  images:
    haproxy: quay.io/airshipit/haproxy:2.4
    helm:
      helm: lachlanevenson/k8s-helm:v3.19.4
    monitoring_image: busybox:1.28.3
  packages:
    common:
      repositories:
        - deb http://127.0.0.1/debian bookworm main
      required:
        runtime: containerd
        socat: socat
      additional:
        - curl
"""

KUBELET = f"""\
schema: promenade/Kubelet/v1
metadata: {META % "kubelet"}
data:
  arguments:
    - --v=3
  images:
    pause: registry.k8s.io/pause:3.9
  config_file_overrides:
    serializeImagePulls: false
"""

NETWORK = f"""\
schema: promenade/KubernetesNetwork/v1
metadata: {META % "kubernetes-network"}
data:
  dns:
    cluster_domain: cluster.local
    service_ip: 10.96.0.10
    upstream_servers:
      - 8.8.8.8
  kubernetes:
    apiserver_port: 6443
    haproxy_port: 6553
    pod_cidr: 10.97.0.0/16
    service_cidr: 10.96.0.0/16
    service_ip: 10.96.0.1
  hosts_entries:
    - ip: 192.168.77.1
      names:
        - registry
  ntp:
    servers:
      - 0.pool.ntp.org
"""

DOCKER = f"""\
schema: promenade/Docker/v1
metadata: {META % "docker"}
data:
  config:
    live-restore: true
"""

PKI = f"""\
schema: promenade/PKICatalog/v1
metadata: {META % "cluster-certificates"}
data:
  key_algorithm: ecdsa-p256
  validity:
    ca_days: 3650
    leaf_days: 365
  certificate_authorities:
    kubernetes:
      description: CA for Kubernetes components
      certificates:
        - document_name: apiserver
          common_name: apiserver
          hosts:
            - 10.96.0.1
  keypairs:
    - name: service-account
"""

ENCRYPTION = f"""\
schema: promenade/EncryptionPolicy/v1
metadata: {META % "encryption-policy"}
data:
  scripts:
    genesis:
      gpg: {{}}
  etcd:
    - resources:
        - secrets
      providers:
        - identity: {{}}
"""

LAYERING = """\
schema: deckhand/LayeringPolicy/v1
metadata: {schema: metadata/Control/v1, name: layering-policy}
data:
  layerOrder:
    - global
    - site
"""

SECRETS = f"""\
schema: deckhand/Certificate/v1
metadata: {META % "extra-ca"}
data: |
  -----BEGIN CERTIFICATE-----
  MIIBszCCAVmgAwIBAgIUQ2FmZQ==
  -----END CERTIFICATE-----
---
schema: deckhand/Passphrase/v1
metadata: {META % "ipmi-password"}
data: hunter2
"""

BASE = {
    "genesis.yaml": GENESIS,
    "n1.yaml": node("n1", "192.168.77.11"),
    "n2.yaml": node("n2", "192.168.77.12"),
    "host-system.yaml": HOST_SYSTEM,
    "kubelet.yaml": KUBELET,
    "network.yaml": NETWORK,
    "docker.yaml": DOCKER,
    "pki.yaml": PKI,
    "encryption.yaml": ENCRYPTION,
    "layering.yaml": LAYERING,
    "secrets.yaml": SECRETS,
}


class Site:
    """A site in a temporary directory, with helpers to break it and to locate text."""

    def __init__(self, root, files):
        self.root = root
        for name, text in files.items():
            (root / name).write_text(text)

    def path(self, file):
        return str(self.root / file)

    def edit(self, file, old, new):
        text = (self.root / file).read_text()
        assert text.count(old) == 1, f"{old!r} must occur once in {file}"
        (self.root / file).write_text(text.replace(old, new))

    def line(self, file, needle):
        """1-based line of the only line of ``file`` containing ``needle`` (``^``: starting with)."""
        found = (lambda text: text.startswith(needle[1:])) if needle.startswith("^") else \
            (lambda text: needle in text)
        lines = [i for i, text in enumerate((self.root / file).read_text().splitlines(), 1)
                 if found(text)]
        assert len(lines) == 1, f"{needle!r} must occur on exactly one line of {file}"
        return lines[0]

    def problems(self):
        return validate(load_site(str(self.root)))


@pytest.fixture
def site(tmp_path):
    return Site(tmp_path, BASE)


def assert_problem(problems, file, line, schema, name, path, *words):
    """Exactly one problem is at (file, line, document, path); its message has every word."""
    found = [p for p in problems
             if (p.file, p.line, p.schema, p.name, p.path) == (file, line, schema, name, path)]
    assert len(found) == 1, f"no single problem at {file}:{line} {schema} {name} {path}:\n" + \
        "\n".join(map(str, problems))
    for word in words:
        assert word in found[0].message, found[0]
    text = str(found[0])
    assert text.startswith(f"{file}:{line} [{schema} {name}] at {path}: "), text
    return found[0]


def test_base_site_is_valid(site):
    assert site.problems() == []


# --- schema violations, several per kind --------------------------------------------------------
# (id, file, text to replace, replacement, needle on the reported line, path, message words)
SCHEMA_CASES = [
    # Genesis
    ("genesis-ip-type", "genesis.yaml", "ip: 192.168.77.10", "ip: [192.168.77.10]",
     "ip: [", ".data.ip", ["expected a string, got a list"]),
    ("genesis-unknown-key", "genesis.yaml", "  hostname: n0\n", "  hostname: n0\n  hostnme: n0\n",
     "hostnme", ".data.hostnme", ["unknown key 'hostnme'", "hostname"]),
    ("genesis-missing-etcdctl", "genesis.yaml",
     "      etcdctl: quay.io/airshipit/porthole-etcdctl-utility:latest\n", "",
     "    kubernetes:", ".data.images.kubernetes.etcdctl", ["missing required key 'etcdctl'"]),
    ("genesis-hostname-pattern", "genesis.yaml", "hostname: n0", "hostname: N0.example",
     "hostname:", ".data.hostname", ["expected a hostname", "'N0.example'"]),
    ("genesis-ip-format", "genesis.yaml", "ip: 192.168.77.10", "ip: 192.168.77.300",
     "ip: 192", ".data.ip", ["expected an IPv4 address", "'192.168.77.300'"]),
    ("genesis-file-two-sources", "genesis.yaml", "      content: hello\n",
     "      content: hello\n      url: http://127.0.0.1/x\n",
     "- path: /etc/genesis", ".data.files[0]", ["exactly one of content, symlink, url or tar_url"]),
    ("genesis-file-mode-type", "genesis.yaml", "mode: 0444", "mode: 'u=r'",
     "mode:", ".data.files[0].mode", ["expected an integer, got a string"]),
    ("genesis-dynamic-labels-empty", "genesis.yaml",
     "    dynamic:\n      - kubernetes-apiserver=enabled\n", "    dynamic: []\n",
     "dynamic:", ".data.labels.dynamic", ["expected at least 1 item"]),
    ("genesis-label-form", "genesis.yaml", "- kubernetes-apiserver=enabled",
     "- kubernetes-apiserver", "- kubernetes-apiserver", ".data.labels.dynamic[0]",
     ["key=value"]),
    # KubernetesNode
    ("node-ip-type", "n1.yaml", "ip: 192.168.77.11", "ip: {}", "ip: {}", ".data.ip",
     ["expected a string, got a mapping"]),
    ("node-unknown-key", "n1.yaml", "  ip: 192.168.77.11\n", "  ip: 192.168.77.11\n  rack: r1\n",
     "rack:", ".data.rack", ["unknown key 'rack'"]),
    ("node-missing-hostname", "n1.yaml", "  hostname: n1\n", "", "^data:", ".data.hostname",
     ["missing required key 'hostname'"]),
    ("node-join-ips-item", "n1.yaml", "join_ip: 192.168.77.10",
     "join_ips: [192.168.77.10, 10.0.0]", "join_ips:", ".data.join_ips[1]",
     ["expected an IPv4 address", "'10.0.0'"]),
    ("node-no-join-ip", "n1.yaml", "  join_ip: 192.168.77.10\n", "", "^data:", ".data",
     ["expected join_ip or join_ips"]),
    ("node-hostname-pattern", "n1.yaml", "hostname: n1", "hostname: 1n", "hostname:",
     ".data.hostname", ["expected a hostname", "'1n'"]),
    # HostSystem
    ("hostsystem-unit-unknown-action", "host-system.yaml", "enable: true", "enabled: true",
     "enabled:", ".data.systemd_units.kube-cgroup.enabled", ["unknown key 'enabled'", "enable"]),
    ("hostsystem-unit-action-type", "host-system.yaml", "enable: true", "enable: sometimes",
     "enable:", ".data.systemd_units.kube-cgroup.enable", ["expected a boolean"]),
    ("hostsystem-missing-haproxy", "host-system.yaml",
     "    haproxy: quay.io/airshipit/haproxy:2.4\n", "", "  images:", ".data.images.haproxy",
     ["missing required key 'haproxy'"]),
    ("hostsystem-relative-file", "host-system.yaml", "path: /usr/local/bin/kubelet",
     "path: usr/local/bin/kubelet", "path: usr", ".data.files[0].path",
     ["expected an absolute path"]),
    ("hostsystem-tar-url-alone", "host-system.yaml",
     "      tar_path: kubernetes/node/bin/kubelet\n", "", "tar_url:", ".data.files[0].tar_url",
     ["'tar_url' also requires 'tar_path'"]),
    ("hostsystem-docker-and-runtime", "host-system.yaml", "        runtime: containerd\n",
     "        runtime: containerd\n        docker: docker.io\n", "      required:",
     ".data.packages.common.required", ["either docker or runtime, not both"]),
    ("hostsystem-no-join-packages", "host-system.yaml", "    common:", "    genesis:",
     "  packages:", ".data.packages", ["packages.common or packages.join"]),
    ("hostsystem-bad-repository", "host-system.yaml",
     "- deb http://127.0.0.1/debian bookworm main", "- http://127.0.0.1/debian bookworm main",
     "- http://127.0.0.1", ".data.packages.common.repositories[0]", ["apt sources line"]),
    # Kubelet
    ("kubelet-missing-pause", "kubelet.yaml",
     "  images:\n    pause: registry.k8s.io/pause:3.9\n", "  images: {}\n",
     "  images:", ".data.images.pause", ["missing required key 'pause'"]),
    ("kubelet-arguments-type", "kubelet.yaml", "  arguments:\n    - --v=3\n",
     "  arguments: --v=3\n", "arguments:", ".data.arguments", ["expected a list, got a string"]),
    ("kubelet-unknown-key", "kubelet.yaml", "  config_file_overrides:", "  config_overrides:",
     "config_overrides:", ".data.config_overrides", ["unknown key 'config_overrides'"]),
    # KubernetesNetwork
    ("network-pod-cidr-prefix", "network.yaml", "pod_cidr: 10.97.0.0/16",
     "pod_cidr: 10.97.0.0/33", "pod_cidr:", ".data.kubernetes.pod_cidr",
     ["expected a CIDR network", "'10.97.0.0/33'"]),
    ("network-service-cidr-host-bits", "network.yaml", "service_cidr: 10.96.0.0/16",
     "service_cidr: 10.96.0.1/16", "service_cidr:", ".data.kubernetes.service_cidr",
     ["no host bits set"]),
    ("network-upstream-dns", "network.yaml", "- 8.8.8.8", "- 8.8.8", "- 8.8.8",
     ".data.dns.upstream_servers[0]", ["expected an IPv4 address"]),
    ("network-dns-service-ip", "network.yaml", "service_ip: 10.96.0.10",
     "service_ip: 10.96.0.1O", "service_ip: 10.96.0.1O", ".data.dns.service_ip",
     ["expected an IPv4 address"]),
    ("network-hosts-entry-ip", "network.yaml", "- ip: 192.168.77.1", "- ip: registry.local",
     "- ip:", ".data.hosts_entries[0].ip", ["expected an IPv4 address"]),
    ("network-port-range", "network.yaml", "apiserver_port: 6443", "apiserver_port: 70000",
     "apiserver_port:", ".data.kubernetes.apiserver_port", ["expected a number <= 65535"]),
    ("network-missing-cluster-domain", "network.yaml", "    cluster_domain: cluster.local\n",
     "", "  dns:", ".data.dns.cluster_domain", ["missing required key 'cluster_domain'"]),
    ("network-unknown-key", "network.yaml", "pod_cidr:", "podCIDR:", "podCIDR:",
     ".data.kubernetes.podCIDR", ["unknown key 'podCIDR'"]),
    ("network-proxy-url", "network.yaml", "  ntp:\n",
     "  proxy:\n    url: proxy.example.com:8080\n  ntp:\n", "url:", ".data.proxy.url",
     ["http:// or https:// proxy URL"]),
    # Docker
    ("docker-config-type", "docker.yaml", "  config:\n    live-restore: true\n",
     "  config: []\n", "config:", ".data.config", ["expected a mapping, got a list"]),
    ("docker-unknown-key", "docker.yaml", "  config:", "  configuration:", "configuration:",
     ".data.configuration", ["unknown key 'configuration'"]),
    # PKICatalog
    ("pki-key-algorithm", "pki.yaml", "key_algorithm: ecdsa-p256", "key_algorithm: rsa-1024",
     "key_algorithm:", ".data.key_algorithm", ["expected one of rsa-2048, rsa-3072, rsa-4096"]),
    ("pki-validity-days", "pki.yaml", "leaf_days: 365", "leaf_days: 0", "leaf_days:",
     ".data.validity.leaf_days", ["expected a number >= 1"]),
    ("pki-missing-common-name", "pki.yaml", "          common_name: apiserver\n", "",
     "- document_name: apiserver",
     ".data.certificate_authorities.kubernetes.certificates[0].common_name",
     ["missing required key 'common_name'"]),
    ("pki-unknown-certificate-key", "pki.yaml", "          hosts:", "          sans:", "sans:",
     ".data.certificate_authorities.kubernetes.certificates[0].sans", ["unknown key 'sans'"]),
    ("pki-keypair-name-type", "pki.yaml", "- name: service-account", "- name: [service-account]",
     "- name:", ".data.keypairs[0].name", ["expected a string, got a list"]),
    # EncryptionPolicy
    ("encryption-unknown-method", "encryption.yaml", "      gpg: {}", "      aes: {}", "aes:",
     ".data.scripts.genesis.aes", ["unknown key 'aes'; expected one of: gpg"]),
    ("encryption-missing-providers", "encryption.yaml",
     "      providers:\n        - identity: {}\n", "", "- resources:",
     ".data.etcd[0].providers", ["missing required key 'providers'"]),
    # LayeringPolicy
    ("layering-empty-order", "layering.yaml", "  layerOrder:\n    - global\n    - site\n",
     "  layerOrder: []\n", "layerOrder:", ".data.layerOrder", ["expected at least 1 item"]),
    ("layering-duplicate-layer", "layering.yaml", "    - global\n", "    - site\n", "layerOrder:",
     ".data.layerOrder", ["expected unique items"]),
]


@pytest.mark.parametrize("file,old,new,needle,path,words",
                         [case[1:] for case in SCHEMA_CASES], ids=[case[0] for case in SCHEMA_CASES])
def test_schema_violation(site, file, old, new, needle, path, words):
    site.edit(file, old, new)
    doc = parse_stream((site.root / file).read_text())[0]
    problems = site.problems()
    assert_problem(problems, site.path(file), site.line(file, needle), doc.schema, doc.name,
                   path, *words)
    assert {p.file for p in problems} == {site.path(file)}


def test_secret_documents_are_checked_without_revealing_them(site):
    site.edit("secrets.yaml", "  -----BEGIN CERTIFICATE-----\n", "  not-a-pem-TOPSECRET\n")
    site.edit("secrets.yaml", "data: hunter2", "data: 12345")
    problems = site.problems()
    path = site.path("secrets.yaml")
    assert_problem(problems, path, site.line("secrets.yaml", "data: |"), "deckhand/Certificate/v1",
                   "extra-ca", ".data", "expected a certificate in PEM form")
    assert_problem(problems, path, site.line("secrets.yaml", "data: 12345"),
                   "deckhand/Passphrase/v1", "ipmi-password", ".data",
                   "expected a string, got an integer")
    assert len(problems) == 2
    assert not any("TOPSECRET" in str(p) or "12345" in str(p) for p in problems)


def test_unknown_promenade_kind(site):
    site.edit("docker.yaml", "schema: promenade/Docker/v1", "schema: promenade/Dokcer/v1")
    problems = site.problems()
    assert_problem(problems, site.path("docker.yaml"), 1, "promenade/Dokcer/v1", "docker",
                   ".schema", "unknown document kind 'promenade/Dokcer/v1'", "promenade/Docker/v1")


def test_problems_are_collected_across_documents(site):
    site.edit("genesis.yaml", "ip: 192.168.77.10", "ip: 192.168.77.300")
    site.edit("kubelet.yaml", "  arguments:\n    - --v=3\n", "  arguments: --v=3\n")
    site.edit("network.yaml", "apiserver_port: 6443", "apiserver_port: 0")
    assert [(p.file, p.path) for p in site.problems()] == [
        (site.path("genesis.yaml"), ".data.ip"),
        (site.path("kubelet.yaml"), ".data.arguments"),
        (site.path("network.yaml"), ".data.kubernetes.apiserver_port"),
    ]


# --- envelopes and YAML (promenade.documents) ---------------------------------------------------
def test_yaml_syntax_error(site):
    site.edit("kubelet.yaml", "pause: registry.k8s.io/pause:3.9", "pause: image: 3.9")
    with pytest.raises(PromenadeError) as caught:
        load_site(str(site.root))
    [problem] = caught.value.problems
    assert (problem.file, problem.line) == (site.path("kubelet.yaml"), 7)
    assert problem.message.startswith("YAML syntax error: mapping values are not allowed")


def test_non_mapping_document(site):
    (site.root / "stray.yaml").write_text("---\n- just\n- a list\n")
    [problem] = check_envelopes(load_site(str(site.root)))
    assert (problem.file, problem.line, problem.schema, problem.name, problem.path) == \
        (site.path("stray.yaml"), 2, None, None, None)
    assert "must be a mapping" in problem.message


def test_missing_schema(site):
    site.edit("docker.yaml", "schema: promenade/Docker/v1\n", "")
    [problem] = check_envelopes(load_site(str(site.root)))
    assert (problem.file, problem.line, problem.name, problem.path) == \
        (site.path("docker.yaml"), 1, "docker", ".schema")
    assert '"schema" is a required document key' in problem.message


def test_missing_metadata(site):
    site.edit("kubelet.yaml", f"metadata: {META % 'kubelet'}\n", "")
    [problem] = check_envelopes(load_site(str(site.root)))
    assert (problem.file, problem.line, problem.schema, problem.path) == \
        (site.path("kubelet.yaml"), 1, "promenade/Kubelet/v1", ".metadata")
    assert '"metadata" is required' in problem.message


def test_missing_name(site):
    site.edit("layering.yaml", "name: layering-policy", "title: layering-policy")
    [problem] = check_envelopes(load_site(str(site.root)))
    assert (problem.file, problem.line, problem.schema, problem.name, problem.path) == \
        (site.path("layering.yaml"), 2, "deckhand/LayeringPolicy/v1", None, ".metadata.name")
    assert '"metadata.name" is required' in problem.message


def test_envelope_problems_through_parse_stream():
    docs = parse_stream("schema: promenade/Docker/v1\nmetadata: {}\ndata: {}\n", "inline.yaml")
    [problem] = check_envelopes(docs)
    assert (problem.file, problem.line, problem.path) == ("inline.yaml", 2, ".metadata.name")


# --- cardinality --------------------------------------------------------------------------------
SINGLE_KINDS = [("promenade/Genesis/v1", "genesis.yaml"),
                ("promenade/HostSystem/v1", "host-system.yaml"),
                ("promenade/Kubelet/v1", "kubelet.yaml"),
                ("promenade/KubernetesNetwork/v1", "network.yaml"),
                ("promenade/Docker/v1", "docker.yaml")]


@pytest.mark.parametrize("schema,file", SINGLE_KINDS)
def test_kind_missing(site, schema, file):
    (site.root / file).unlink()
    problems = site.problems()
    assert problems == [Problem(f"there are 0 {schema} documents; expected exactly one",
                                schema=schema)]


@pytest.mark.parametrize("schema,file", SINGLE_KINDS)
def test_kind_twice(site, schema, file):
    text = (site.root / file).read_text()
    copy = text.replace(f"name: {parse_stream(text)[0].name},", "name: second,")
    (site.root / f"z-{file}").write_text(copy)
    problems = [p for p in site.problems() if "expected exactly one" in p.message]
    first, second = site.path(file), site.path(f"z-{file}")
    assert problems == [Problem(f"there are 2 {schema} documents ({first}:1, {second}:1); "
                                "expected exactly one",
                                file=second, line=1, schema=schema, name="second")]


# --- unique nodes, addresses and PKI options ----------------------------------------------------
def test_duplicate_node_name(site):
    (site.root / "n3.yaml").write_text(node("n1", "192.168.77.13").replace("hostname: n1",
                                                                          "hostname: n3"))
    problems = site.problems()
    assert_problem(problems, site.path("n3.yaml"), 2, "promenade/KubernetesNode/v1", "n1",
                   ".metadata.name", "node name 'n1' is also used by promenade/KubernetesNode/v1 "
                   f"n1 ({site.path('n1.yaml')}:2)")
    assert len(problems) == 1


def test_duplicate_hostname_with_genesis(site):
    site.edit("n2.yaml", "hostname: n2", "hostname: n0")
    problems = site.problems()
    assert problems == [Problem(
        f"hostname 'n0' is also used by promenade/Genesis/v1 genesis ({site.path('genesis.yaml')}:4)",
        site.path("n2.yaml"), 4, "promenade/KubernetesNode/v1", "n2", ".data.hostname")]


def test_duplicate_ip_between_nodes(site):
    site.edit("n2.yaml", "ip: 192.168.77.12", "ip: 192.168.77.11")
    problems = site.problems()
    assert problems == [Problem(
        f"IP address '192.168.77.11' is also used by promenade/KubernetesNode/v1 n1 "
        f"({site.path('n1.yaml')}:5)",
        site.path("n2.yaml"), 5, "promenade/KubernetesNode/v1", "n2", ".data.ip")]


@pytest.mark.parametrize("old,new,line,path,message", [
    ("service_ip: 10.96.0.10", "service_ip: 10.95.0.10", 6, ".data.dns.service_ip",
     "10.95.0.10 is outside kubernetes.service_cidr 10.96.0.0/16"),
    ("service_ip: 10.96.0.1\n", "service_ip: 10.97.0.1\n", 14, ".data.kubernetes.service_ip",
     "10.97.0.1 is outside kubernetes.service_cidr 10.96.0.0/16"),
    ("pod_cidr: 10.97.0.0/16", "pod_cidr: 10.0.0.0/8", 12, ".data.kubernetes.pod_cidr",
     "pod_cidr 10.0.0.0/8 overlaps service_cidr 10.96.0.0/16"),
])
def test_address_ranges(site, old, new, line, path, message):
    site.edit("network.yaml", old, new)
    assert site.problems() == [Problem(message, site.path("network.yaml"), line,
                                       "promenade/KubernetesNetwork/v1", "kubernetes-network", path)]


def test_conflicting_pki_options(site):
    addition = PKI.replace("cluster-certificates,", "more-certificates,").replace(
        "ecdsa-p256", "rsa-4096")
    (site.root / "pki2.yaml").write_text(addition)
    problems = site.problems()
    assert_problem(problems, site.path("pki2.yaml"), 4, "promenade/PKICatalog/v1",
                   "more-certificates", ".data.key_algorithm",
                   "key_algorithm 'rsa-4096' differs from 'ecdsa-p256' in promenade/PKICatalog/v1 "
                   f"cluster-certificates ({site.path('pki.yaml')}:4)")
    assert len(problems) == 1


# --- site DataSchemas ---------------------------------------------------------------------------
DATA_SCHEMA = """\
schema: deckhand/DataSchema/v1
metadata: {schema: metadata/Control/v1, name: example/Rack/v1}
data:
  $schema: http://json-schema.org/draft-04/schema#
  type: object
  additionalProperties: false
  required: [location]
  properties:
    location: {type: string}
    units: {type: integer, minimum: 1}
"""

RACK = f"""\
schema: example/Rack/v1
metadata: {META % "rack-1"}
data:
  location: dc1
  units: 42
"""


def test_data_schema_accepts_valid_document(site):
    (site.root / "rack-schema.yaml").write_text(DATA_SCHEMA)
    (site.root / "rack.yaml").write_text(RACK)
    assert site.problems() == []


def test_data_schema_rejects_document(site):
    (site.root / "rack-schema.yaml").write_text(DATA_SCHEMA)
    (site.root / "rack.yaml").write_text(RACK.replace("units: 42", "units: 0\n  row: 3"))
    problems = site.problems()
    path = site.path("rack.yaml")
    assert_problem(problems, path, 5, "example/Rack/v1", "rack-1", ".data.units",
                   "expected a number >= 1, got 0")
    assert_problem(problems, path, 6, "example/Rack/v1", "rack-1", ".data.row", "unknown key 'row'")
    assert len(problems) == 2


def test_data_schema_adds_rules_to_a_promenade_kind(site):
    (site.root / "docker-schema.yaml").write_text(
        "schema: deckhand/DataSchema/v1\n"
        "metadata: {schema: metadata/Control/v1, name: promenade/Docker/v1}\n"
        "data:\n"
        "  properties:\n"
        "    config: {required: [storage-driver]}\n")
    problems = site.problems()
    assert_problem(problems, site.path("docker.yaml"), 4, "promenade/Docker/v1", "docker",
                   ".data.config.storage-driver", "missing required key 'storage-driver'")
    assert len(problems) == 1


def test_invalid_data_schema(site):
    (site.root / "rack-schema.yaml").write_text(DATA_SCHEMA.replace("minimum: 1", "minimum: one"))
    problems = site.problems()
    assert_problem(problems, site.path("rack-schema.yaml"), 10, "deckhand/DataSchema/v1",
                   "example/Rack/v1", ".data.properties.units.minimum", "invalid JSON schema")
    assert len(problems) == 1


def test_duplicate_data_schema(site):
    (site.root / "rack-schema.yaml").write_text(DATA_SCHEMA + "---\n" + DATA_SCHEMA)
    problems = site.problems()
    assert_problem(problems, site.path("rack-schema.yaml"), 13, "deckhand/DataSchema/v1",
                   "example/Rack/v1", ".metadata.name",
                   f"already defined at {site.path('rack-schema.yaml')}:1")
    assert len(problems) == 1


def test_hard_coded_line_numbers_match_the_base_site(site):
    """A plain cross-check of the line search used above, on one known layout."""
    site.edit("genesis.yaml", "etcd: quay.io/coreos/etcd:v3.5.12", "etcd: 42")
    assert_problem(site.problems(), site.path("genesis.yaml"), 14, "promenade/Genesis/v1",
                   "genesis", ".data.images.kubernetes.etcd", "expected a string, got an integer")
