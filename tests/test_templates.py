"""Role file trees (templates/roles) rendered through promenade.config and promenade.trees."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import kubernetes_validate
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from promenade.config import SiteConfig
from promenade.documents import parse_stream
from promenade.errors import PromenadeError
from promenade.charts import assembled_sources
from promenade.trees import (CHARTS_TARGET, FileEntry, host_files, input_files, node_files,
                             render_role_files)
from sitefixtures import REPO, embedded_site, rendered

EXAMPLES = os.path.join(os.path.dirname(REPO), "shared", "examples", "promenade")
SHELLCHECK = os.path.join(os.path.dirname(sys.executable), "shellcheck")
K8S_VERSION = "1.30"
NODES = {"n1": "192.168.77.11", "n2": "192.168.77.12", "n3": "192.168.77.13"}
GENESIS_MANIFESTS = {"kubernetes-apiserver", "kubernetes-controller-manager", "kubernetes-scheduler",
                     "kubernetes-etcd", "auxiliary-kubernetes-etcd", "haproxy"}
ETCD_PKI = {"ca.pem", "server.pem", "server-key.pem", "peer-ca.pem", "peer.pem", "peer-key.pem",
            "client.pem", "client-key.pem"}
ARMADA_MANIFEST = """\
schema: armada/Manifest/v1
metadata: {schema: metadata/Document/v1, name: cluster-bootstrap}
data: {release_prefix: ucp, chart_groups: [core]}
"""


@pytest.fixture(scope="module")
def config():
    return SiteConfig(embedded_site())


@pytest.fixture(scope="module")
def trees(config):
    """Files by path for genesis (key None) and every node."""
    return {node: {entry.path: entry for entry in node_files(config, node)} for node in [None, *NODES]}


def _text(tree, path):
    return tree[path].data.decode()


def _with(config, *extra_docs, drop=()):
    """A config with extra documents (YAML texts) added and documents of ``drop`` schemas removed."""
    docs = [doc.copy() for doc in config.documents if not (doc.schema or "").startswith(drop or "\0")]
    for text in extra_docs:
        docs.extend(parse_stream(text, "extra.yaml"))
    return SiteConfig(docs)


def _data_changed(config, schema, change):
    """A config whose first ``schema`` document's data is passed through ``change``."""
    docs = [doc.copy() for doc in config.documents]
    target = next(doc for doc in docs if doc.schema == schema)
    change(target.data)
    return SiteConfig(docs)


def _validate_k8s(obj, where):
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{where}: {exc.message} at {list(exc.absolute_path)}")


# --- what every node gets ---------------------------------------------------------------------
@pytest.mark.parametrize("node", [None, *NODES])
def test_node_identity_certificates_and_modes(config, trees, node):
    tree = trees[node]
    host = "n0" if node is None else node
    ip = "192.168.77.10" if node is None else NODES[node]
    cert = "kubelet-genesis" if node is None else f"kubelet-{node}"
    assert tree["/etc/kubernetes/pki/kubelet.pem"].data.decode() == config.certificate(cert)
    assert tree["/etc/kubernetes/pki/kubelet-key.pem"].data.decode() == config.certificate_key(cert)
    assert _text(tree, "/etc/kubernetes/pki/kubelet-client-ca.pem") == config.ca("kubernetes")
    defaults = _text(tree, "/etc/default/kubelet")
    assert f"--hostname-override={host} " in defaults and f"--node-ip={ip} " in defaults
    assert "--container-runtime-endpoint=unix:///run/containerd/containerd.sock" in defaults
    assert (node is not None) == ("--node-labels=node.promenade.airshipit.org/role=master " in defaults)
    assert f"{ip} {host}.cluster.example.com {host}\n" in _text(tree, "/etc/hosts")
    assert "192.168.77.10:6443 check port 6443" in _text(tree, "/etc/promenade/haproxy/haproxy.cfg")
    assert "bind *:6553" in _text(tree, "/etc/promenade/haproxy/haproxy.cfg")
    assert _text(tree, "/etc/resolv.conf").splitlines()[2:] == ["nameserver 10.96.0.10", "nameserver 192.168.77.1"]
    for path, entry in tree.items():
        if path.startswith(CHARTS_TARGET + "/"):
            continue  # modes of chart files come from the checkout
        secret = path.endswith(("-key.pem", ".key")) or path in {
            "/etc/genesis/apiserver/encryption_provider.yaml", "/etc/genesis/armada/assets/manifest.yaml"}
        executable = path.startswith("/usr/local/bin/") or path.endswith(".sh")
        assert entry.mode == (0o600 if secret else 0o755 if executable else 0o644), path
    assert tree["/usr/local/bin/promenade-teardown"].mode == 0o755


@pytest.mark.parametrize("node", [None, *NODES])
def test_masters_get_their_etcd_certificates(config, trees, node):
    tree = trees[node]
    suffix = "genesis" if node is None else node
    placed = {path.rsplit("/", 1)[1] for path in tree if path.startswith("/etc/kubernetes/etcd/pki/")}
    assert placed == ETCD_PKI
    assert _text(tree, "/etc/kubernetes/etcd/pki/server.pem") == config.certificate(f"kubernetes-etcd-{suffix}")
    assert _text(tree, "/etc/kubernetes/etcd/pki/peer-key.pem") == config.certificate_key(
        f"kubernetes-etcd-{suffix}-peer")
    assert _text(tree, "/etc/kubernetes/etcd/pki/peer-ca.pem") == config.ca("kubernetes-etcd-peer")


CHAINS = [  # (certificate, its key, the CA that must have issued it), as placed
    ("/etc/kubernetes/pki/kubelet.pem", "/etc/kubernetes/pki/kubelet-key.pem", "/etc/kubernetes/pki/cluster-ca.pem"),
    ("/etc/kubernetes/admin/pki/admin.pem", "/etc/kubernetes/admin/pki/admin-key.pem",
     "/etc/kubernetes/admin/pki/cluster-ca.pem"),
    ("/etc/kubernetes/etcd/pki/server.pem", "/etc/kubernetes/etcd/pki/server-key.pem", "/etc/kubernetes/etcd/pki/ca.pem"),
    ("/etc/kubernetes/etcd/pki/client.pem", "/etc/kubernetes/etcd/pki/client-key.pem", "/etc/kubernetes/etcd/pki/ca.pem"),
    ("/etc/kubernetes/etcd/pki/peer.pem", "/etc/kubernetes/etcd/pki/peer-key.pem", "/etc/kubernetes/etcd/pki/peer-ca.pem"),
]
GENESIS_CHAINS = [(f"/etc/genesis/{a}", f"/etc/genesis/{b}", f"/etc/genesis/{c}") for a, b, c in [
    ("apiserver/pki/apiserver.pem", "apiserver/pki/apiserver-key.pem", "apiserver/pki/cluster-ca.pem"),
    ("apiserver/pki/etcd-client.pem", "apiserver/pki/etcd-client-key.pem", "apiserver/pki/etcd-client-ca.pem"),
    ("apiserver/pki/kubelet-client.pem", "apiserver/pki/kubelet-client-key.pem", "apiserver/pki/cluster-ca.pem"),
    ("controller-manager/pki/controller-manager.pem", "controller-manager/pki/controller-manager-key.pem",
     "controller-manager/pki/cluster-ca.pem"),
    ("scheduler/pki/scheduler.pem", "scheduler/pki/scheduler-key.pem", "scheduler/pki/cluster-ca.pem"),
    ("armada/auth/pki/armada.pem", "armada/auth/pki/armada-key.pem", "armada/auth/pki/cluster-ca.pem"),
]]


@pytest.mark.parametrize("node", [None, "n1"])
def test_placed_certificates_match_their_keys_and_issuers(trees, node):
    tree = trees[node]
    for cert_path, key_path, ca_path in CHAINS + (GENESIS_CHAINS if node is None else []):
        cert = x509.load_pem_x509_certificate(tree[cert_path].data)
        key = serialization.load_pem_private_key(tree[key_path].data, password=None)
        assert cert.public_key() == key.public_key(), cert_path
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(tree[ca_path].data))
    kubelet = x509.load_pem_x509_certificate(tree["/etc/kubernetes/pki/kubelet.pem"].data)
    host = "n0" if node is None else node
    assert kubelet.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == f"system:node:{host}"
    if node is None:
        private = serialization.load_pem_private_key(tree["/etc/genesis/apiserver/pki/service-account.key"].data, None)
        public = serialization.load_pem_public_key(tree["/etc/genesis/apiserver/pki/service-account.pub"].data)
        assert private.public_key() == public


def test_a_worker_gets_no_etcd_certificates_and_needs_none(config):
    worker = """\
schema: promenade/KubernetesNode/v1
metadata: {schema: metadata/Document/v1, name: w1}
data: {hostname: w1, ip: 192.168.77.21, join_ips: [192.168.77.11, 192.168.77.12],
       labels: {dynamic: [node-type=worker]}}
"""
    kubelet = "\n".join(doc.rstrip() for doc in (
        "schema: deckhand/Certificate/v1\nmetadata: {schema: metadata/Document/v1, name: kubelet-w1}\n"
        "data: CERT\n",
        "---\nschema: deckhand/CertificateKey/v1\nmetadata: {schema: metadata/Document/v1, name: kubelet-w1}\n"
        "data: KEY\n"))
    tree = {e.path: e for e in node_files(_with(config, worker, kubelet), "w1")}
    assert not [path for path in tree if "/etcd/" in path or path.startswith("/etc/genesis")]
    assert _text(tree, "/etc/kubernetes/pki/kubelet.pem") == "CERT\n"
    haproxy = _text(tree, "/etc/promenade/haproxy/haproxy.cfg")
    assert "192.168.77.11:6443" in haproxy and "192.168.77.12:6443" in haproxy
    assert "kubectl label node \"$NODE\" node-type- " in _text(tree, "/usr/local/bin/promenade-teardown")


def test_genesis_and_join_trees_differ_by_role(config, trees):
    genesis, join = trees[None], trees["n1"]
    manifests = {os.path.basename(p)[:-5] for p in genesis if p.startswith("/etc/kubernetes/manifests/")}
    assert manifests == GENESIS_MANIFESTS | ({"bootstrap-armada"} if config.armada_documents() else set())
    assert "/etc/kubernetes/manifests/.placeholder" in join
    assert not [path for path in join if path.startswith("/etc/genesis/")]
    assert [p for p in join if p.startswith("/etc/kubernetes/manifests/")] == [
        "/etc/kubernetes/manifests/.placeholder", "/etc/kubernetes/manifests/haproxy.yaml"]
    assert list(genesis) == sorted(genesis)  # node_files is sorted by path


# --- Kubernetes objects and configuration files --------------------------------------------------
@pytest.mark.parametrize("node", [None, "n1"])
def test_static_pods_validate_against_kubernetes_schemas(trees, node):
    manifests = [p for p in trees[node] if p.startswith("/etc/kubernetes/manifests/") and p.endswith(".yaml")]
    assert manifests
    for path in manifests:
        _validate_k8s(yaml.safe_load(trees[node][path].data), path)


def test_kubelet_configuration(trees):
    kubelet = yaml.safe_load(trees["n2"]["/etc/kubernetes/kubelet/config.yaml"].data)
    assert (kubelet["apiVersion"], kubelet["kind"]) == ("kubelet.config.k8s.io/v1beta1", "KubeletConfiguration")
    assert kubelet["clusterDNS"] == ["10.96.0.10"] and kubelet["clusterDomain"] == "cluster.local"
    assert kubelet["authentication"]["anonymous"] == {"enabled": False}
    assert kubelet["staticPodPath"] == "/etc/kubernetes/manifests"
    assert kubelet["serializeImagePulls"] is False  # Kubelet .config_file_overrides, merged
    assert kubelet["tlsCertFile"] in trees["n2"]


@pytest.mark.parametrize("node, path", [(None, "/etc/kubernetes/admin/kubeconfig.yaml"),
                                        (None, "/etc/genesis/controller-manager/kubeconfig.yaml"),
                                        (None, "/etc/genesis/scheduler/kubeconfig.yaml"),
                                        (None, "/etc/genesis/armada/auth/config"),
                                        ("n3", "/etc/kubernetes/kubelet.conf")])
def test_kubeconfigs_point_at_haproxy_and_placed_files(trees, node, path):
    kubeconfig = yaml.safe_load(trees[node][path].data)
    assert kubeconfig["kind"] == "Config"
    (cluster,) = kubeconfig["clusters"]
    (user,) = kubeconfig["users"]
    assert cluster["cluster"]["server"] == "https://127.0.0.1:6553"
    for referenced in (cluster["cluster"]["certificate-authority"], user["user"]["client-certificate"],
                       user["user"]["client-key"]):
        assert referenced in trees[node], referenced
    assert kubeconfig["current-context"] == kubeconfig["contexts"][0]["name"]


def test_apiserver_flags_files_and_encryption(config, trees):
    genesis = trees[None]
    pod = yaml.safe_load(genesis["/etc/kubernetes/manifests/kubernetes-apiserver.yaml"].data)
    command = pod["spec"]["containers"][0]["command"]
    assert command[0] == "kube-apiserver" and "--advertise-address=192.168.77.10" in command
    assert command[-5:] == config.genesis["apiserver"]["arguments"]  # site arguments come last
    mounted = pod["spec"]["volumes"][0]["hostPath"]["path"]
    for flag in command:
        if flag.startswith("--") and "=/etc/kubernetes/apiserver/" in flag:
            assert flag.split("=", 1)[1].replace("/etc/kubernetes/apiserver", mounted) in genesis, flag
    encryption = yaml.safe_load(genesis["/etc/genesis/apiserver/encryption_provider.yaml"].data)
    assert encryption["kind"] == "EncryptionConfiguration"
    assert encryption["resources"] == config.genesis["apiserver"]["encryption"]


def test_genesis_etcd_bootstrap_members(trees):
    genesis = trees[None]
    aux = yaml.safe_load(genesis["/etc/kubernetes/manifests/auxiliary-kubernetes-etcd.yaml"].data)
    main = yaml.safe_load(genesis["/etc/kubernetes/manifests/kubernetes-etcd.yaml"].data)
    containers = main["spec"]["containers"] + aux["spec"]["containers"]
    env = {c["name"]: {e["name"]: e["value"] for e in c["env"]} for c in containers}
    expected = "n0=https://192.168.77.10:2380,auxiliary-0=https://192.168.77.10:12380," \
               "auxiliary-1=https://192.168.77.10:22380"
    for name, client in [("etcd-n0", 2379), ("etcd-auxiliary-0", 12379), ("etcd-auxiliary-1", 22379)]:
        assert env[name]["ETCD_INITIAL_CLUSTER"] == expected
        assert env[name]["ETCD_ADVERTISE_CLIENT_URLS"] == f"https://192.168.77.10:{client}"
        assert env[name]["ETCD_HEARTBEAT_INTERVAL"] == "100"  # Genesis .etcd.heartbeat_interval
    assert env["monitor"]["AUXILIARY_THRESHOLD"] == "3"
    assert genesis["/etc/genesis/etcd/auxiliary-monitor.sh"].mode == 0o755


def test_bootstrap_armada_carries_the_sites_armada_documents(config):
    site = _with(config, ARMADA_MANIFEST, drop="armada/")
    tree = {e.path: e for e in node_files(site, None)}
    docs = list(yaml.safe_load_all(tree["/etc/genesis/armada/assets/manifest.yaml"].data))
    assert [(d["schema"], d["metadata"]["name"]) for d in docs] == [("armada/Manifest/v1", "cluster-bootstrap")]
    pod = yaml.safe_load(tree["/etc/kubernetes/manifests/bootstrap-armada.yaml"].data)
    _validate_k8s(pod, "bootstrap-armada.yaml")
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
    assert env["TARGET_MANIFEST"] == "cluster-bootstrap"
    assert env["KUBECONFIG"] in tree
    helm = _data_changed(site, "promenade/Genesis/v1", lambda data: data.update(armada_helm_bootstrap=True))
    assert "/etc/kubernetes/manifests/bootstrap-armada.yaml" not in {e.path for e in node_files(helm, None)}
    bare = {e.path for e in node_files(_with(config, drop="armada/"), None)}
    assert not {"/etc/kubernetes/manifests/bootstrap-armada.yaml", "/etc/genesis/armada/assets/manifest.yaml"} & bare


def test_genesis_carries_the_charts_the_armada_documents_use(config, trees):
    genesis = trees[None]
    placed = {path: entry for path, entry in genesis.items() if path.startswith(CHARTS_TARGET + "/")}
    sources = assembled_sources()
    assert {path[len(CHARTS_TARGET) + 1:] for path in placed} == set(sources)
    assert set(sources.values()) <= set(input_files())
    for entry in placed.values():
        with open(sources[entry.path[len(CHARTS_TARGET) + 1:]], "rb") as handle:
            assert handle.read() == entry.data
    assert placed[f"{CHARTS_TARGET}/etcd/files/etcd_anchor.py"].mode == 0o755
    assert not [path for path in trees["n1"] if path.startswith(CHARTS_TARGET)]
    local = [doc["data"]["source"] for doc in config.armada_documents()
             if doc["schema"] == "armada/Chart/v1" and doc["data"]["source"]["type"] == "local"]
    for source in local:
        assert f"{source['location']}/{source['subpath']}/Chart.yaml" in genesis, source


def test_proxy_settings_appear_only_with_a_proxy(config, trees):
    proxy_paths = {"/etc/apt/apt.conf.d/50proxyconf", "/etc/systemd/system/containerd.service.d/http-proxy.conf",
                   "/etc/systemd/system/docker.service.d/http-proxy.conf"}
    assert not proxy_paths & set(trees["n1"])
    proxied = _data_changed(config, "promenade/KubernetesNetwork/v1", lambda data: data.update(
        proxy={"url": "http://proxy.example.com:3128", "additional_no_proxy": ["192.168.77.0/24"]}))
    tree = {e.path: e for e in node_files(proxied, "n1")}
    assert proxy_paths <= set(tree)
    assert 'Acquire::https::Proxy "http://proxy.example.com:3128";' in _text(tree, "/etc/apt/apt.conf.d/50proxyconf")
    dropin = _text(tree, "/etc/systemd/system/containerd.service.d/http-proxy.conf")
    assert '"NO_PROXY=192.168.77.0/24,127.0.0.1,localhost,' in dropin
    assert "kubernetes.default.svc.cluster.local" in dropin


def test_docker_and_containerd_configuration(config, trees):
    daemon = json.loads(trees["n1"]["/etc/docker/daemon.json"].data)
    assert daemon == config.docker["config"]
    toml = _text(trees["n1"], "/etc/containerd/config.toml")
    assert 'sandbox_image = "registry.k8s.io/pause:3.9"' in toml and "SystemdCgroup = true" in toml


# --- scripts -----------------------------------------------------------------------------------
@pytest.mark.parametrize("node, path, shell", [
    (None, "/usr/local/bin/promenade-teardown", "bash"),
    ("n1", "/usr/local/bin/promenade-teardown", "bash"),
    ("n1", "/usr/local/bin/promenade-debug-report", "bash"),
    (None, "/etc/genesis/etcd/auxiliary-monitor.sh", "sh"),
])
def test_placed_scripts_pass_shellcheck(trees, tmp_path, node, path, shell):
    script = tmp_path / os.path.basename(path)
    script.write_bytes(trees[node][path].data)
    result = subprocess.run([SHELLCHECK, "--shell", shell, str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    assert subprocess.run([shell, "-n", str(script)]).returncode == 0


def test_teardown_knows_the_node_and_its_etcd_membership(trees):
    teardown = _text(trees["n2"], "/usr/local/bin/promenade-teardown")
    assert "NODE=n2\n" in teardown and "ETCD_MEMBER=yes\n" in teardown
    assert "kubernetes-etcd- " in teardown and "set -euo pipefail" in teardown


FAKE_COMMANDS = {  # stand-ins for the cluster tools; every call is logged to $CALLS
    "kubectl": """case "$*" in
  *"get node"*) [[ -e "$STATE/registered" ]] ;;
  *"delete node"*) rm -f "$STATE/registered" ;;
esac""",
    "etcdctl": """case "$*" in
  *"member list"*) if [[ -e "$STATE/member" ]]; then
      echo "1f2e, started, n1, https://192.168.77.11:2380, https://192.168.77.11:2379, false"
      echo "8e9e, started, n2, https://192.168.77.12:2380, https://192.168.77.12:2379, false"; fi ;;
  *"member remove"*) rm -f "$STATE/member" ;;
esac""",
    "systemctl": "true",
    "crictl": "true",
}


def test_teardown_leaves_the_cluster_in_order_and_is_idempotent(trees, tmp_path):
    root, state, fake = tmp_path / "root", tmp_path / "state", tmp_path / "bin"
    for directory in (root / "etc/kubernetes/manifests", root / "etc/kubernetes/admin", root / "var/lib/etcd/kubernetes",
                      state, fake):
        directory.mkdir(parents=True)
    for name in ("haproxy.yaml", "etcd.yaml", "apiserver.yaml"):
        (root / "etc/kubernetes/manifests" / name).write_text("kind: Pod\n")
    (root / "etc/kubernetes/admin/kubeconfig.yaml").write_text("kind: Config\n")
    (state / "registered").touch()
    (state / "member").touch()
    for name, body in FAKE_COMMANDS.items():
        (fake / name).write_text(f'#!/bin/bash\necho "{name} $*" >>"$CALLS"\n{body}\n')
        (fake / name).chmod(0o755)
    script = tmp_path / "promenade-teardown"
    script.write_bytes(trees["n2"]["/usr/local/bin/promenade-teardown"].data)
    env = {"PATH": f"{fake}:/usr/bin:/bin", "PROMENADE_ROOT": str(root), "STATE": str(state),
           "CALLS": str(tmp_path / "calls")}

    subprocess.run(["bash", str(script)], env=env, check=True, capture_output=True, timeout=60)
    calls = (tmp_path / "calls").read_text().splitlines()
    assert [call.split()[0] + " " + call.split()[1] for call in calls] == [
        "kubectl --request-timeout=10s", "kubectl drain", "kubectl label", "etcdctl --command-timeout=10s",
        "etcdctl --command-timeout=30s", "systemctl disable", "kubectl --request-timeout=10s", "kubectl delete",
        "crictl rmp"]
    assert calls[2].startswith("kubectl label node n2 coredns- kubernetes-apiserver-")
    assert calls[4] == "etcdctl --command-timeout=30s member remove 8e9e"
    assert not list((root / "etc/kubernetes/manifests").iterdir())
    assert not (root / "var/lib/etcd/kubernetes").exists()

    (tmp_path / "calls").unlink()
    subprocess.run(["bash", str(script)], env=env, check=True, capture_output=True, timeout=60)
    again = (tmp_path / "calls").read_text()
    assert "drain" not in again and "member remove" not in again and "delete node" not in again


FAKE_ETCDCTL = """#!/bin/sh
echo "etcdctl $*" >>"$CALLS"
case "$*" in
  *"member list"*) cat "$STATE/members" ;;
  *"endpoint status"*) while read -r id status name peer client learner; do
      leader=false; [ "$id" = "$(cat "$STATE/leader")," ] && leader=true
      echo "${client%,}, ${id%,}, 3.5.16, 20 kB, $leader, false, 2, 9, 9, "; done <"$STATE/members" ;;
  *move-leader*) echo "${3}" >"$STATE/leader" ;;
  *"member remove"*) grep -v "^$3," "$STATE/members" >"$STATE/rest"; mv "$STATE/rest" "$STATE/members" ;;
esac
"""


def test_auxiliary_monitor_hands_over_leadership_then_removes_the_auxiliary_members(trees, tmp_path):
    state, fake, data = tmp_path / "state", tmp_path / "bin", tmp_path / "etcd"
    for directory in (state, fake, data / "auxiliary-0", data / "auxiliary-1", data / "kubernetes"):
        directory.mkdir(parents=True)
    members = [("a0", "auxiliary-0", 12379), ("a1", "auxiliary-1", 22379), ("m0", "n0", 2379),
               ("m1", "n1", 2379), ("m2", "n2", 2379)]
    (state / "members").write_text("".join(
        f"{id_}, started, {name}, https://10.0.0.{i}:{port + 1}, https://10.0.0.{i}:{port}, false\n"
        for i, (id_, name, port) in enumerate(members)))
    (state / "leader").write_text("a0\n")
    (fake / "etcdctl").write_text(FAKE_ETCDCTL)
    (fake / "etcdctl").chmod(0o755)
    manifest = tmp_path / "auxiliary-kubernetes-etcd.yaml"
    manifest.write_text("kind: Pod\n")
    script = tmp_path / "monitor.sh"
    script.write_bytes(trees[None]["/etc/genesis/etcd/auxiliary-monitor.sh"].data)
    env = {"PATH": f"{fake}:/usr/bin:/bin", "STATE": str(state), "CALLS": str(tmp_path / "calls"),
           "AUXILIARY_MANIFEST": str(manifest), "ETCD_DATA_ROOT": str(data), "MONITOR_INTERVAL": "1"}
    subprocess.run(["sh", str(script)], env=env, check=True, capture_output=True, timeout=60)
    calls = (tmp_path / "calls").read_text().splitlines()
    assert "etcdctl --endpoints=https://10.0.0.0:12379 move-leader m0" in calls
    assert calls.index("etcdctl --endpoints=https://10.0.0.0:12379 move-leader m0") < calls.index(
        "etcdctl member remove a0") < calls.index("etcdctl member remove a1")
    assert [line.split(",")[0] for line in (state / "members").read_text().splitlines()] == ["m0", "m1", "m2"]
    assert sorted(path.name for path in data.iterdir()) == ["kubernetes"]
    assert not manifest.exists()


def test_debug_report_collects_a_tarball(trees, tmp_path):
    script = tmp_path / "report"
    script.write_bytes(trees["n1"]["/usr/local/bin/promenade-debug-report"].data)
    env = dict(os.environ, KUBECONFIG=str(tmp_path / "none"), COMMAND_TIMEOUT="5",
               PATH="/usr/bin:/bin:/usr/sbin:/sbin")
    result = subprocess.run(["bash", str(script), str(tmp_path / "out")], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    archive = result.stdout.strip()
    assert archive.startswith(str(tmp_path / "out")) and archive.endswith(".tgz")
    listing = subprocess.run(["tar", "-tzf", archive], capture_output=True, text=True, check=True).stdout
    assert "/host/uname.txt" in listing and "/systemd/kubelet-status.txt" in listing


# --- errors -------------------------------------------------------------------------------------
def test_a_missing_certificate_names_the_document_and_the_template(config):
    docs = [doc for doc in config.documents if doc.key != ("deckhand/Certificate/v1", "kubelet-n1")]
    with pytest.raises(PromenadeError) as info:
        node_files(SiteConfig(docs), "n1")
    (problem,) = info.value.problems
    assert (problem.schema, problem.name) == ("deckhand/Certificate/v1", "kubelet-n1")
    assert "templates/roles/common/etc/kubernetes/pki/kubelet.pem.j2" in problem.message


def test_a_missing_required_value_names_file_line_and_path(config):
    changed = _data_changed(config, "promenade/Genesis/v1", lambda data: data["images"]["kubernetes"].pop("etcd"))
    with pytest.raises(PromenadeError) as info:
        render_role_files(changed, "genesis", None)
    (problem,) = info.value.problems
    assert problem.path == ".data.images.kubernetes.etcd"
    assert (problem.schema, problem.name) == ("promenade/Genesis/v1", "genesis")
    assert problem.file.endswith("site/site/genesis.yaml") and problem.line is not None


def test_roles_are_checked():
    with pytest.raises(ValueError):
        render_role_files(SiteConfig([]), "genesis", "n1")
    with pytest.raises(ValueError):
        render_role_files(SiteConfig([]), "join", None)


def test_rendering_is_deterministic(config, trees):
    assert node_files(SiteConfig(embedded_site()), "n1") == list(trees["n1"].values())


# --- host files and the original examples ------------------------------------------------------
def test_host_files_content_and_symlinks(config):
    entries = {e.path: e for e in host_files(config.for_genesis(), "genesis")}
    assert entries["/usr/bin/kubectl"] == FileEntry("/usr/bin/kubectl", 0o777, symlink="/usr/local/bin/kubectl")
    assert entries["/etc/profile.d/kubeconfig.sh"].data.startswith(b"export KUBECONFIG=")
    assert entries["/etc/profile.d/kubeconfig.sh"].mode == 0o644


@pytest.fixture(scope="module", params=["gate", "simple"])
def example(request):
    return request.param, SiteConfig(rendered(sorted(glob.glob(os.path.join(EXAMPLES, request.param, "*.yaml")))))


def test_example_sites_render_for_every_node(example):
    name, config = example
    for node in [None, *config.nodes]:
        tree = {e.path: e for e in node_files(config, node)}
        for path, entry in tree.items():
            if path.startswith("/etc/kubernetes/manifests/") and path.endswith(".yaml"):
                _validate_k8s(yaml.safe_load(entry.data), f"{name} {node} {path}")
    genesis = {e.path: e for e in host_files(config.for_genesis(), "genesis")}
    assert "/etc/genesis/apiserver/acconfig.yaml" in genesis or name == "simple"
    assert "/usr/local/bin/kubelet" not in genesis  # tar_url downloads are not host_files' business
