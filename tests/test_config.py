"""promenade.config: typed access to rendered documents and the per-script views."""

from __future__ import annotations

import pytest

from promenade.config import SiteConfig
from promenade.documents import parse_stream
from promenade.errors import PromenadeError

SITE = """\
schema: promenade/Genesis/v1
metadata: {schema: metadata/Document/v1, name: genesis}
data:
  hostname: g0
  ip: 10.0.0.10
  labels: {dynamic: [kubernetes-etcd=enabled, a=b]}
  apiserver: {arguments: [--v=2, --x=y], empty: []}
---
schema: promenade/KubernetesNode/v1
metadata: {schema: metadata/Document/v1, name: node-one}
data: {hostname: one, ip: 10.0.0.11, domain: example.org, join_ips: [10.0.0.10, 10.0.0.12],
       labels: {static: [s=1], dynamic: [role=worker]}}
---
schema: promenade/KubernetesNode/v1
metadata: {schema: metadata/Document/v1, name: node-two}
data: {hostname: two, ip: 10.0.0.12, join_ip: 10.0.0.10, labels: {dynamic: [kubernetes-etcd=enabled]}}
---
schema: promenade/KubernetesNode/v1
metadata: {schema: metadata/Document/v1, name: node-three}
data: {hostname: three, ip: 10.0.0.13}
---
schema: promenade/KubernetesNetwork/v1
metadata: {schema: metadata/Document/v1, name: network}
data:
  dns: {cluster_domain: cluster.test}
  proxy: {url: "http://proxy:3128", additional_no_proxy: [10.0.0.0/8, localhost]}
---
schema: deckhand/CertificateAuthority/v1
metadata: {schema: metadata/Document/v1, name: kubernetes}
data: CA-PEM
---
schema: deckhand/Certificate/v1
metadata: {schema: metadata/Document/v1, name: apiserver}
data: "APISERVER-PEM\\n"
---
schema: deckhand/PublicKey/v1
metadata: {schema: metadata/Document/v1, name: service-account}
data: PUBLIC
---
schema: deckhand/PrivateKey/v1
metadata: {schema: metadata/Document/v1, name: service-account}
data: PRIVATE
---
schema: armada/Chart/v1
metadata: {schema: metadata/Document/v1, name: chart}
data: {release: r}
"""


@pytest.fixture()
def config():
    return SiteConfig(parse_stream(SITE, "site.yaml"))


def test_get_values_defaults_and_indices(config):
    assert config.get("Genesis", "apiserver.arguments[1]") == "--x=y"
    assert config.get("promenade/Genesis/v1", ".hostname") == "g0"
    assert config.get("Genesis", "apiserver.empty") == []
    assert config.get("Genesis", "apiserver.missing", "fallback") == "fallback"
    assert config.get("Kubelet", "arguments", ["default"]) == ["default"]  # no Kubelet document at all


def test_a_missing_value_names_file_line_document_and_path(config):
    with pytest.raises(PromenadeError) as info:
        config.get("Genesis", "images.kubernetes.apiserver")
    (problem,) = info.value.problems
    assert (problem.file, problem.schema, problem.name) == ("site.yaml", "promenade/Genesis/v1", "genesis")
    assert problem.path == ".data.images.kubernetes.apiserver"
    assert problem.line == 3  # `data:`, the deepest part of the path that exists
    with pytest.raises(PromenadeError, match="no promenade/Kubelet/v1 document"):
        config.kubelet


def test_pki_accessors_and_fallbacks(config):
    assert config.ca("kubernetes") == "CA-PEM\n"
    assert config.certificate("apiserver") == "APISERVER-PEM\n"
    assert config.certificate("apiserver-kubelet-client", "apiserver") == "APISERVER-PEM\n"
    assert config.ca("kubelet", "kubernetes") == "CA-PEM\n"
    assert config.keypair("service-account") == ("PUBLIC\n", "PRIVATE\n")
    with pytest.raises(PromenadeError) as info:
        config.certificate("admin")
    assert (info.value.problems[0].schema, info.value.problems[0].name) == ("deckhand/Certificate/v1", "admin")


def test_no_proxy_and_armada_documents(config):
    assert config.proxy_url == "http://proxy:3128"
    assert config.no_proxy == ("10.0.0.0/8,localhost,127.0.0.1,kubernetes,kubernetes.default,"
                               "kubernetes.default.svc,kubernetes.default.svc.cluster.test")
    assert [doc["metadata"]["name"] for doc in config.armada_documents()] == ["chart"]
    assert SiteConfig([]).no_proxy == "" and SiteConfig([]).encryption_policy == {}


def test_views_hold_only_what_one_script_may_use(config):
    genesis = config.for_genesis()
    assert not genesis.nodes and genesis.host.is_genesis
    assert (genesis.host.hostname, genesis.host.join_ips, genesis.host.etcd_member) == ("g0", ("10.0.0.10",), True)
    assert genesis.host.kubelet_certificate == "kubelet-genesis"
    one = config.for_node("node-one")
    assert list(one.nodes) == ["node-one"] and one.first("promenade/Genesis/v1") is None
    host = one.host
    assert (host.name, host.hostname, host.fqdn, host.external_ip) == ("node-one", "one", "one.example.org", "127.0.0.1")
    assert host.join_ips == ("10.0.0.10", "10.0.0.12") and host.static_labels == ("s=1",)
    assert (host.etcd_member, host.kubelet_certificate, host.label_keys) == (False, "kubelet-one", ("role",))
    two = config.for_node("node-two").host
    assert two.join_ips == ("10.0.0.10",) and two.etcd_member and two.etcd_peer_certificate == "kubernetes-etcd-two-peer"
    assert one.ca("kubernetes") == "CA-PEM\n"  # shared documents stay visible


def test_join_ips_fall_back_to_genesis_only_where_it_is_visible(config):
    assert config.join_ips(config.node("node-three")) == ["10.0.0.10"]
    with pytest.raises(PromenadeError) as info:
        config.for_node("node-three")
    (problem,) = info.value.problems
    assert (problem.name, problem.path) == ("node-three", ".data.join_ips")
    with pytest.raises(PromenadeError, match="no promenade/KubernetesNode/v1 document named 'nope'"):
        config.for_node("nope")
