"""The embedded site (site/) and the synthetic site generator (bench/sitegen.py)."""

from __future__ import annotations

import importlib.util
import ipaddress
import os

import pytest

from promenade import pki
from promenade.config import PKI_CATALOG
from promenade.documents import load_site
from promenade.rendering import render
from promenade.validation import validate
from sitefixtures import REPO, SITE

NODE = "promenade/KubernetesNode/v1"
MASTER_LABELS = {"kubernetes-apiserver=enabled", "kubernetes-controller-manager=enabled",
                 "kubernetes-etcd=enabled", "kubernetes-scheduler=enabled"}
NODES = {"n1": "192.168.77.11", "n2": "192.168.77.12", "n3": "192.168.77.13"}
# docs/architecture.md, "Embedded site names"
CATALOG = {
    "kubernetes": {"apiserver", "apiserver-kubelet-client", "admin", "armada", "controller-manager",
                   "scheduler", "proxy", "kubelet-genesis", "kubelet-n1", "kubelet-n2", "kubelet-n3"},
    "kubernetes-etcd": {"apiserver-etcd", "kubernetes-etcd-anchor", "kubernetes-etcd-genesis",
                        "kubernetes-etcd-n1", "kubernetes-etcd-n2", "kubernetes-etcd-n3"},
    "kubernetes-etcd-peer": {"kubernetes-etcd-genesis-peer", "kubernetes-etcd-n1-peer",
                             "kubernetes-etcd-n2-peer", "kubernetes-etcd-n3-peer"},
}


@pytest.fixture(scope="module")
def site_docs():
    return load_site(SITE)


@pytest.fixture(scope="module")
def rendered(site_docs):
    result = render([doc.copy() for doc in site_docs], strict=False)
    assert validate(result.documents) == []
    return {(doc.schema, doc.name): doc for doc in result.documents}


def _requests(docs):
    catalogs = [doc for doc in docs if doc.schema == PKI_CATALOG]
    return {request["name"]: request for request in pki.plan(catalogs, docs)[0]}


def test_layering_policy_and_both_layers_are_used(site_docs):
    policies = [doc for doc in site_docs if doc.schema == "deckhand/LayeringPolicy/v1"]
    assert [doc.data["layerOrder"] for doc in policies] == [["global", "site"]]
    layers = {doc.layer: os.path.relpath(doc.file, SITE).split(os.sep)[0] for doc in site_docs if doc.layer}
    assert layers == {"global": "global", "site": "site"}
    children = [doc for doc in site_docs if doc.layering.get("parentSelector")]
    assert {doc.schema for doc in children} >= {NODE, "promenade/Genesis/v1", "promenade/HostSystem/v1"}
    assert all(doc.layering["actions"] for doc in children)


def test_genesis_and_nodes_render_with_inherited_labels_and_substitutions(rendered):
    genesis = rendered[("promenade/Genesis/v1", "genesis")].data
    assert (genesis["hostname"], genesis["ip"]) == ("n0", "192.168.77.10")
    assert MASTER_LABELS <= set(genesis["labels"]["dynamic"])
    nodes = {name: doc.data for (schema, name), doc in rendered.items() if schema == NODE}
    assert {name: data["ip"] for name, data in nodes.items()} == NODES
    for name, data in nodes.items():
        assert data["hostname"] == name
        assert MASTER_LABELS <= set(data["labels"]["dynamic"])
        # from the abstract global parent, merged under the node's own labels
        assert data["labels"]["static"] == ["node.promenade.airshipit.org/role=master"]
        assert data["domain"] == "cluster.example.com"
        assert data["join_ip"] == genesis["ip"]  # substituted from Genesis .ip
    policy = rendered[("promenade/EncryptionPolicy/v1", "encryption-policy")].data
    secret = rendered[("deckhand/Passphrase/v1", "etcd-encryption-key")].data
    assert policy["etcd"][0]["providers"][0]["secretbox"]["keys"][0]["secret"] == secret
    assert genesis["apiserver"]["encryption"] == policy["etcd"]  # chained substitution


def test_abstract_parents_are_not_rendered(rendered):
    names = {name for _schema, name in rendered}
    assert not names & {"master-node-global", "genesis-global", "host-system-global", "kubernetes-network-global"}


def test_site_builds_offline(rendered):
    for key in (("promenade/HostSystem/v1", "host-system"), ("promenade/Genesis/v1", "genesis")):
        for spec in rendered[key].data.get("files", []):
            assert not {"url", "tar_url"} & set(spec), spec["path"]
            assert {"content", "symlink"} & set(spec), spec["path"]


def test_pki_catalog_covers_exactly_the_documented_names(site_docs):
    requests = _requests(site_docs)
    found = {}
    for request in requests.values():
        if request["kind"] == "cert":
            found.setdefault(request["ca"], set()).add(request["name"])
    assert found == CATALOG
    assert {name for name, r in requests.items() if r["kind"] == "keypair"} == {"service-account"}


def test_certificate_subjects_and_hosts(site_docs):
    requests = _requests(site_docs)
    apiserver = requests["apiserver"]["hosts"]
    assert {"127.0.0.1", "localhost", "10.96.0.1", "kubernetes.default.svc.cluster.local",
            "kubernetes"} <= set(apiserver)
    assert set(NODES.values()) | {"192.168.77.10"} <= set(apiserver)
    for group in ("admin", "armada"):
        assert requests[group]["groups"] == ["system:masters"]
    for name, host, ip in [("genesis", "n0", "192.168.77.10")] + [(n, n, ip) for n, ip in NODES.items()]:
        kubelet = requests[f"kubelet-{name}"]
        assert kubelet["common_name"] == f"system:node:{host}"
        assert kubelet["groups"] == ["system:nodes"]
        assert {host, ip} <= set(kubelet["hosts"])
        for etcd in (f"kubernetes-etcd-{name}", f"kubernetes-etcd-{name}-peer"):
            assert {host, ip, "127.0.0.1", "localhost"} <= set(requests[etcd]["hosts"])


def _sitegen():
    spec = importlib.util.spec_from_file_location("sitegen", os.path.join(REPO, "bench", "sitegen.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sitegen_adds_valid_workers_with_certificates(tmp_path):
    sitegen = _sitegen()
    out = sitegen.generate_site(5, str(tmp_path / "s"))
    docs = render(load_site(out), strict=False).documents
    assert validate(docs) == []
    workers = {doc.name: doc.data for doc in docs if doc.schema == NODE and doc.name.startswith("w")}
    assert sorted(workers) == [f"w{i}" for i in range(5)]
    ips = [ipaddress.IPv4Address(data["ip"]) for data in workers.values()]
    assert len(set(ips)) == 5 and all(ip in ipaddress.ip_network("192.168.128.0/17") for ip in ips)
    requests = _requests(docs)
    assert {f"kubelet-w{i}" for i in range(5)} <= set(requests)
    assert requests["kubelet-w3"]["common_name"] == "system:node:w3"


def test_sitegen_relabel_rewrites_only_the_nodes_file(tmp_path):
    sitegen = _sitegen()
    out = sitegen.generate_site(3, str(tmp_path / "s"))
    files = [os.path.join(out, sitegen.NODES_FILE), os.path.join(out, sitegen.CATALOG_FILE)]
    before = [os.stat(path).st_mtime_ns for path in files]
    os.utime(files[0], ns=(1, 1))
    os.utime(files[1], ns=(1, 1))
    sitegen.generate_site(3, out, labels={1: ("node-type=worker", "rack=r7")})
    after = [os.stat(path).st_mtime_ns for path in files]
    assert after[0] != 1 and after[1] == 1, (before, after)
    nodes = {doc.name: doc.data for doc in load_site(out) if doc.schema == NODE}
    assert nodes["w1"]["labels"]["dynamic"] == ["node-type=worker", "rack=r7"]
    assert nodes["w0"]["labels"]["dynamic"] == ["node-type=worker"]
