"""The charts: values against their schemas, the site's chart documents, what the anchors
place on a host (validated against the Kubernetes schemas), the generic anchor's file
handling, and the assembled charts."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import jsonschema
import kubernetes_validate
import pytest
import yaml

from doitrun import doit, executed
from promenade import charts
from sitefixtures import embedded_site

ANCHOR = os.path.join(charts.ANCHOR_DIR, "anchor.py")
OWN_CHARTS = ["apiserver", "controller-manager", "coredns", "etcd", "haproxy", "proxy", "scheduler"]
ANCHOR_CHARTS = ["apiserver", "controller-manager", "etcd", "haproxy", "scheduler"]
KUBERNETES_VERSION = "1.33"
NODES = {"n0": "192.168.77.10", "n1": "192.168.77.11", "n2": "192.168.77.12", "n3": "192.168.77.13"}


def schema_of(name: str) -> dict:
    with open(os.path.join(charts.CHARTS_DIR, name, "values.schema.json"), encoding="utf-8") as handle:
        return json.load(handle)


def schema_errors(name: str, values: dict) -> list[str]:
    validator = jsonschema.Draft7Validator(schema_of(name))
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(values)]


@pytest.fixture(scope="module")
def site_values() -> dict[str, dict]:
    """Each locally sourced chart's values as Helm sees them: chart defaults + the site's
    rendered armada/Chart/v1 values (certificates substituted)."""
    result = {}
    for doc in embedded_site():
        if doc.schema == "armada/Chart/v1" and doc.data["source"]["type"] == "local":
            name = doc.data["source"]["subpath"]
            result[name] = charts.merge_values(charts.default_values(name), doc.data.get("values") or {})
    return result


def test_every_chart_is_found():
    assert set(OWN_CHARTS) <= set(charts.chart_names())
    assert "anchor-lib" not in charts.chart_names()  # a library, bundled into the others


@pytest.mark.parametrize("name", charts.chart_names())
def test_values_yaml_matches_its_schema(name):
    jsonschema.Draft7Validator.check_schema(schema_of(name))
    assert schema_errors(name, charts.default_values(name)) == []


@pytest.mark.parametrize("name", OWN_CHARTS)
def test_schema_rejects_unknown_keys_and_wrong_types(name):
    values = charts.default_values(name)
    assert any("bogus" in e for e in schema_errors(name, {**values, "bogus": 1}))
    broken = json.loads(json.dumps(values))
    broken["images"]["tags"] = {}
    assert schema_errors(name, broken)


def test_site_references_every_chart_and_its_values_match(site_values):
    assert set(OWN_CHARTS) <= set(site_values)
    for name, values in site_values.items():
        assert schema_errors(name, values) == [], name


def test_site_certificates_reach_the_etcd_nodes(site_values):
    values = site_values["etcd"]
    assert [node["name"] for node in values["nodes"]] == list(NODES)
    pems = [node["tls"][kind][part] for node in values["nodes"] for kind in ("client", "peer") for part in ("cert", "key")]
    assert all(pem.startswith("-----BEGIN") for pem in pems)
    assert len(set(pems)) == len(pems)  # every node has its own certificates


def _placed(name: str, values: dict, node: str) -> dict[str, str]:
    variables = {"node": {"name": node, "ip": NODES[node]}}
    if name == "etcd":
        variables["etcd"] = {
            "name": node, "peer_url": f"https://{NODES[node]}:2380", "client_url": f"https://{NODES[node]}:2379",
            "data_dir": values["etcd"]["host_data_path"],
            "initial_cluster": ",".join(f"{n}=https://{ip}:2380" for n, ip in NODES.items()),
        }
    return charts.placed_files(name, values, variables)


@pytest.mark.parametrize("name", ANCHOR_CHARTS)
@pytest.mark.parametrize("node", ["n0", "n2"])
def test_anchor_manifests_are_valid_kubernetes_objects(site_values, name, node):
    placed = _placed(name, site_values[name], node)
    manifests = {path: text for path, text in placed.items() if path.startswith("/etc/kubernetes/manifests/")}
    assert manifests, f"{name} places no static pod manifest"
    for path, text in manifests.items():
        pod = yaml.safe_load(text)
        kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)
        assert pod["kind"] == "Pod" and pod["spec"]["hostNetwork"] is True
        mounted = {v["hostPath"]["path"] for v in pod["spec"]["volumes"]}
        # every file the pod reads from the host is placed by the anchor under a mounted path
        for other in placed:
            if other != path and not other.startswith("/etc/kubernetes/manifests/"):
                assert any(other.startswith(m + "/") for m in mounted), (other, mounted)


def test_etcd_manifest_is_this_nodes_member(site_values):
    placed = _placed("etcd", site_values["etcd"], "n2")
    command = yaml.safe_load(placed["/etc/kubernetes/manifests/kubernetes-etcd.yaml"])["spec"]["containers"][0]["command"]
    assert "--name=n2" in command
    assert "--initial-advertise-peer-urls=https://192.168.77.12:2380" in command
    assert "--initial-cluster-state=existing" in command
    node = site_values["etcd"]["nodes"][2]
    assert placed["/etc/etcd/kubernetes/pki/peer.pem"] == node["tls"]["peer"]["cert"]
    assert placed["/etc/etcd/kubernetes/pki/server-key.pem"] == node["tls"]["client"]["key"]


def test_apiserver_places_the_encryption_configuration(site_values):
    placed = _placed("apiserver", site_values["apiserver"], "n0")
    config = yaml.safe_load(placed["/etc/kubernetes/apiserver/encryption-provider.yaml"])
    assert config["kind"] == "EncryptionConfiguration"
    assert "secretbox" in config["resources"][0]["providers"][0]
    kubeconfig = yaml.safe_load(_placed("scheduler", site_values["scheduler"], "n0")["/etc/kubernetes/scheduler/kubeconfig.yaml"])
    assert kubeconfig["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6553"


# --- the generic anchor program ---------------------------------------------------------

def run_anchor(command: str, values: dict, tmp_path, *extra: str) -> subprocess.CompletedProcess:
    values_file = tmp_path / "values.json"
    values_file.write_text(json.dumps(values))
    args = [sys.executable, ANCHOR, command, f"--values={values_file}", f"--root={tmp_path / 'host'}",
            f"--templates={os.path.join(charts.CHARTS_DIR, 'scheduler', 'files')}", "--var=node.name=n1", *extra]
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


def scheduler_values() -> dict:
    values = charts.default_values("scheduler")
    values["secrets"]["tls"] = {"ca": "CA\n", "cert": "CERT\n", "key": "KEY\n"}
    return values


def test_anchor_places_files_only_when_changed_and_cleans_up(tmp_path):
    values = scheduler_values()
    host = tmp_path / "host"
    first = run_anchor("sync", values, tmp_path)
    assert first.returncode == 0, first.stderr
    key = host / "etc/kubernetes/scheduler/pki/scheduler-key.pem"
    manifest = host / "etc/kubernetes/manifests/kube-scheduler.yaml"
    assert key.read_text() == "KEY\n" and stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "--kubeconfig=/etc/kubernetes/scheduler/kubeconfig.yaml" in manifest.read_text()
    assert first.stderr.count("updated ") == 5 and "KEY" not in first.stderr
    before = {p: p.stat().st_mtime_ns for p in host.rglob("*") if p.is_file()}

    second = run_anchor("sync", values, tmp_path)
    assert second.returncode == 0 and "updated" not in second.stderr
    assert {p: p.stat().st_mtime_ns for p in host.rglob("*") if p.is_file()} == before

    values["secrets"]["tls"]["key"] = "NEW KEY\n"
    third = run_anchor("sync", values, tmp_path)
    assert third.stderr.count("updated ") == 1 and "scheduler-key.pem" in third.stderr
    assert key.read_text() == "NEW KEY\n"

    gone = run_anchor("cleanup", values, tmp_path)
    assert gone.returncode == 0
    assert gone.stderr.index("kube-scheduler.yaml") < gone.stderr.index("pki/ca.pem")  # manifest first
    assert not [p for p in host.rglob("*") if p.is_file()]


def test_anchor_refuses_unresolved_placeholders_and_writes_nothing(tmp_path):
    values = scheduler_values()
    del values["scheduler"]["host_etc_path"]
    result = run_anchor("sync", values, tmp_path)
    assert result.returncode == 1
    assert "no value at 'values.scheduler.host_etc_path'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "host").exists()


def test_anchor_run_stops_on_the_stop_file(tmp_path):
    stop = tmp_path / "stop"
    stop.touch()
    result = run_anchor("run", scheduler_values(), tmp_path, f"--stop-file={stop}", "--cleanup")
    assert result.returncode == 0, result.stderr
    assert not list((tmp_path / "host").rglob("*.yaml"))


# --- assembled charts -------------------------------------------------------------------

def test_bundle_adds_anchor_programs_and_library(tmp_path):
    written = charts.bundle(str(tmp_path))
    with open(os.path.join(charts.ANCHOR_DIR, "etcd_anchor.py"), "rb") as handle:
        assert (tmp_path / "etcd/files/etcd_anchor.py").read_bytes() == handle.read()
    assert (tmp_path / "etcd/files/anchor.py").exists() and (tmp_path / "etcd/files/fileio.py").is_file()
    assert not (tmp_path / "etcd/files/fileio.py").is_symlink()
    assert (tmp_path / "apiserver/charts/anchor-lib/templates/_anchor.tpl").exists()
    assert not (tmp_path / "coredns/files").exists() and not (tmp_path / "scheduler/files/etcd_anchor.py").exists()
    assert stat.S_IMODE((tmp_path / "haproxy/files/anchor.py").stat().st_mode) == 0o755
    assert written and charts.bundle(str(tmp_path)) == []  # deterministic: nothing rewritten


def test_doit_charts_assembles_once(tmp_path):
    out = tmp_path / "build"
    assert executed(doit("charts", out=out)) == ["charts"]
    assert (out / "charts/etcd/files/etcd_anchor.py").exists()
    assert (out / "charts/scheduler/charts/anchor-lib/Chart.yaml").exists()
    assert executed(doit("charts", out=out)) == []
