"""The shipped gate scenarios on sandbox nodes (the same runner as ``doit gate:<scenario>``),
and deliberately broken sites that must make a gate fail at the right stage."""

from __future__ import annotations

import os
import re
import shutil

import pytest
import yaml

from promenade.gates import sandbox
from promenade.gates.scenario import REPO, Runner, load_scenario, make_provider

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="sandbox nodes need root"),
    pytest.mark.skipif(not shutil.which("systemd-nspawn") or not shutil.which("debootstrap"),
                       reason="needs systemd-container and debootstrap (scripts/test installs them)"),
]

JOIN_SKIPS = "--skip-phases install-packages,start-kubelet,label-node,wait-node-ready,wait-haproxy"


@pytest.fixture(scope="module", autouse=True)
def no_leftovers():
    """Namespaces, mounts and processes of earlier runs that were killed go first."""
    sandbox.clean_all()


def run_scenario(scenario, out: str):
    """Run a scenario as ``doit gate:<name>`` does; afterwards nothing of its sandbox is left."""
    provider = make_provider(scenario, progress=lambda _m: None)
    report = Runner(scenario, provider, out, progress=lambda _m: None).run()
    assert not os.path.exists(provider.dir) and not sandbox._netns_names(f"pg-{provider.run}-")
    return report


def test_smoke(tmp_path):
    report = run_scenario(load_scenario("smoke"), str(tmp_path))
    assert report.ok, report.summary() + "\n" + "\n".join(s.message for s in report.stages)
    genesis = next(s for s in report.stages if s.name == "genesis")
    assert "test_etcd_members::test_member_list_is_exactly_the_expected_set[ssh://n0]" in genesis.passed
    assert "test_certificates::test_certificates_chain_to_site_ca_with_node_sans[ssh://n0]" in genesis.passed
    assert all("cannot be installed on sandbox nodes" in why for why in genesis.skipped.values())
    assert os.path.exists(tmp_path / "gates" / "smoke" / "junit.xml")


def test_resiliency(tmp_path):
    scenario = load_scenario("resiliency")
    report = run_scenario(scenario, str(tmp_path))
    assert report.ok, report.summary() + "\n" + "\n".join(s.message for s in report.stages)
    stages = {s.name: s for s in report.stages}
    spec = {s["name"]: s for s in scenario.spec["stages"]}
    membership = "test_etcd_members::test_member_list_is_exactly_the_expected_set[ssh://{}]"
    for name in ("teardown-genesis", "hard-reboot-masters", "rejoin-n0-as-worker", "hard-reboot-all"):
        assert spec[name]["etcd_members"] == ["n1", "n2", "n3"]
        assert all(membership.format(node) in stages[name].passed for node in ("n1", "n2", "n3")), name
    # n0 rejoined as a worker: checked, but not an etcd member
    rejoined = stages["rejoin-n0-as-worker"].passed
    assert "test_certificates::test_certificates_chain_to_site_ca_with_node_sans[ssh://n0]" in rejoined
    assert membership.format("n0") not in rejoined + stages["hard-reboot-all"].passed
    assert "test_node::test_hostname_is_the_node_name[ssh://n0]" in stages["hard-reboot-all"].passed


def _broken_site(tmp_path, relative: str, old: str, new: str, count: int = 1) -> str:
    site = tmp_path / "site"
    shutil.copytree(os.path.join(REPO, "site"), site)
    path = site / relative
    text = path.read_text()
    assert text.count(old) >= count, f"{relative} no longer contains {old!r}"
    path.write_text(text.replace(old, new, count))
    return str(site)


def _run(tmp_path, site: str, stages: list[dict], nodes=("n0", "n1")):
    smoke = load_scenario("smoke").spec
    spec = {key: smoke[key] for key in ("etcdctl", "files", "certificates")}
    spec.update(site=site, nodes={n: f"192.168.77.1{n[1:]}" for n in nodes},
                stages=[{"name": "build", "build": {}}, next(s for s in smoke["stages"] if s["name"] == "genesis")]
                + stages)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(spec))
    report = run_scenario(load_scenario(str(path)), str(tmp_path / "out"))
    return [(s.name, s.ok) for s in report.stages], report.stages[-1].message


def test_wrong_san_for_n1_fails_the_join_of_n1(tmp_path):
    site = _broken_site(tmp_path, "site/pki-catalog.yaml",
                        "common_name: kubernetes-etcd-n1\n          hosts: [n1, 192.168.77.11,",
                        "common_name: kubernetes-etcd-n1\n          hosts: [n1, 192.168.77.91,")
    stages, message = _run(tmp_path, site, [
        {"name": "join-n1", "run": {"node": "n1", "script": "join-n1.sh", "args": JOIN_SKIPS},
         "roles": {"n1": "master"}, "checks": ["test_certificates"]}])
    assert stages[-1] == ("join-n1", False) and all(ok for _, ok in stages[:-1])
    assert "/etc/kubernetes/etcd/pki/server.pem: SANs" in message and "lack 192.168.77.11" in message


def test_wrong_etcd_peer_url_fails_the_membership_check(tmp_path):
    site = _broken_site(tmp_path, "site/nodes/n1.yaml", "hostname: n1\n  ip: 192.168.77.11",
                        "hostname: n1\n  ip: 192.168.77.21")
    stages, message = _run(tmp_path, site, [
        {"name": "join-n1", "run": {"node": "n1", "script": "join-n1.sh", "args": JOIN_SKIPS},
         "roles": {"n1": "master"}, "etcd_members": ["auxiliary-0", "auxiliary-1", "n0", "n1"]}])
    assert stages[-1] == ("join-n1", False) and all(ok for _, ok in stages[:-1])
    assert re.search(r"peer URLs \['https://192\.168\.77\.21:2380'\]", message), message


def test_missing_file_mode_fails_the_build_naming_the_document(tmp_path):
    site = _broken_site(tmp_path, "global/host-system.yaml", "    - path: /etc/crictl.yaml\n      mode: 0644\n",
                        "    - path: /etc/crictl.yaml\n")
    stages, message = _run(tmp_path, site, [])
    assert stages == [("boot", True), ("build", False)]
    assert "host-system.yaml:" in message, message
    assert "[promenade/HostSystem/v1 host-system] at .data.files[1].mode: missing required key 'mode'" in message
