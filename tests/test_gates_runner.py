"""Gate scenarios: loading, the certificate split of a PKICatalog addition, and the runner on
real sandbox nodes (stages, checks, failure at the right stage, JUnit, node logs, cleanup)."""

from __future__ import annotations

import os
import shutil
import xml.etree.ElementTree as ET

import pytest
import yaml

from promenade.errors import PromenadeError
from promenade.gates import image, sandbox
from promenade.gates.provider import GateError
from promenade.gates.scenario import REPO, Runner, load_scenario, scenario_names, withhold_certificates

needs_root = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("systemd-nspawn"),
                                reason="sandbox nodes need root and systemd-container")


def test_shipped_scenarios_load():
    assert {"smoke", "genesis", "resiliency"} <= set(scenario_names())
    stages = [s["name"] for s in load_scenario("resiliency").spec["stages"]]
    assert stages.index("join-n3-without-certificates-fails") < stages.index("build-with-n3") < stages.index("join-n3")


def test_image_build_steps_fail_and_time_out_naming_their_log(tmp_path, monkeypatch):
    with open(tmp_path / "build.log", "w", encoding="utf-8") as log:
        with pytest.raises(GateError, match=r"`sh -c exit 3 \.\.\.` exited 3; see .*build\.log"):
            image._run(["sh", "-c", "exit 3"], log)
        monkeypatch.setattr(image, "STEP_TIMEOUT", 0.2)
        with pytest.raises(GateError, match=r"took over 0\.2 s; see .*build\.log"):
            image._run(["sleep", "5"], log)
    assert (tmp_path / "build.log").read_text().splitlines() == ["$ sh -c exit 3", "$ sleep 5"]


def test_bad_scenario_names_file_and_path(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("nodes: {n0: 192.168.77.10}\nstages:\n  - {name: x, power_off: [n0], wipe: [n0], bogus: 1}\n")
    with pytest.raises(PromenadeError) as info:
        load_scenario(str(path))
    problem = info.value.problems[0]
    assert problem.file == str(path) and problem.path == ".stages.0" and "bogus" in problem.message


def test_withholding_removes_only_the_node_own_certificates(tmp_path):
    withheld = withhold_certificates(os.path.join(REPO, "site"), str(tmp_path / "site"), ["n3"],
                                     ["n0", "n1", "n2", "n3"])
    assert withheld == ["kubelet-n3", "kubernetes-etcd-n3", "kubernetes-etcd-n3-peer"]
    text = "".join(p.read_text() for p in (tmp_path / "site").rglob("*.yaml"))
    assert "kubelet-n3" not in text and "name: kubernetes-etcd-n3" not in text
    assert "kubelet-n2" in text and "kubernetes-etcd-n2-peer" in text


SCENARIO = {
    "nodes": {"n0": "192.168.77.10", "n1": "192.168.77.11"},
    "stages": [
        {"name": "prepare", "exec": {"node": "n0", "command": "echo gate > /root/stage"},
         "roles": {"n0": "worker", "n1": "worker"}, "checks": ["test_node", "test_kubernetes"]},
        {"name": "outage", "power_cycle": ["n0", "n1"], "checks": ["test_node"]},
        {"name": "needs-api", "exec": {"node": "n0", "command": "kubectl get nodes"}, "needs_kubernetes": True},
        {"name": "breaks", "exec": {"node": "n1", "command": "test -e /root/stage"}},
        {"name": "never-reached", "exec": {"node": "n0", "command": "true"}},
    ],
}


@needs_root
def test_runner_runs_stages_reports_and_fails_at_the_right_stage(tmp_path):
    path = tmp_path / "mini.yaml"
    path.write_text(yaml.safe_dump(SCENARIO))
    scenario = load_scenario(str(path))
    lines = []
    provider = sandbox.Sandbox(scenario.nodes, progress=lines.append)
    report = Runner(scenario, provider, str(tmp_path / "out"), progress=lines.append).run()

    assert not report.ok
    assert [(s.name, s.ok) for s in report.stages] == [
        ("boot", True), ("prepare", True), ("outage", True), ("needs-api", True), ("breaks", False)]
    prepare = report.stages[1]
    assert len(prepare.passed) == 8
    assert sorted(prepare.skipped) == sorted(f"test_kubernetes::{t}[ssh://{n}]" for n in ("n0", "n1")
                                             for t in ("test_kubelet_is_active", "test_node_is_ready"))
    assert "cannot be installed on sandbox nodes" in report.stages[3].skipped["needs-api"]
    assert "n1: `test -e /root/stage` exited 1" in report.stages[4].message

    suite = ET.parse(os.path.join(report.dir, "junit.xml")).getroot()
    assert suite.get("tests") == "5" and suite.get("failures") == "1"
    assert suite.find("testcase[@name='breaks']/failure") is not None
    assert b"systemd" in (tmp_path / "out/gates/mini/logs/n1.log").read_bytes()
    assert any("gate mini (sandbox) FAILED" in line for line in lines)
    assert not os.path.exists(provider.dir) and not sandbox._netns_names(f"pg-{provider.run}-")
