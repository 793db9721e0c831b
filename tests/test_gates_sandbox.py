"""Sandbox provider: boot real nspawn nodes, reach them over ssh, run the gate's testinfra checks.

The checks reach the sandbox through the ``ssh`` provider (a hosts file, exactly as for real
machines), proving that the modules in ``gates/checks`` run unchanged over plain ssh.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import pytest
import yaml

from promenade.gates import sandbox
from promenade.gates.checks import run_checks
from promenade.gates.provider import GateError, Node
from promenade.gates.ssh import SshHosts

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="sandbox nodes need root"),
    pytest.mark.skipif(not shutil.which("systemd-nspawn") or not shutil.which("debootstrap"),
                       reason="needs systemd-container and debootstrap (scripts/test installs them)"),
]

NODES = [Node("n0", "192.168.77.10"), Node("n1", "192.168.77.11")]


@pytest.fixture(scope="module")
def box():
    provider = sandbox.Sandbox(NODES, progress=lambda _msg: None)
    try:
        provider.up()
        yield provider
    finally:
        provider.down()
    assert not os.path.exists(provider.dir)
    assert not sandbox._netns_names(f"pg-{provider.run}-")


def _context(address_n0="192.168.77.10"):
    return {"kubernetes": False, "nodes": {"n0": {"address": address_n0, "role": "genesis"},
                                           "n1": {"address": "192.168.77.11", "role": "master"}}}


def test_nodes_have_own_hostname_network_and_no_route_out(box):
    assert box.exec("n0", "hostname").stdout.decode().strip() == "n0"
    assert box.exec("n0", "ping -c1 -W2 n1").returncode == 0
    assert box.exec("n1", "ip route").stdout.decode().strip().splitlines() == [
        "192.168.77.0/24 dev eth0 proto kernel scope link src 192.168.77.11"]
    assert box.exec("n0", "ping -c1 -W1 192.0.2.1", check=False).returncode != 0
    with pytest.raises(GateError, match="n0: `false` exited 1"):
        box.exec("n0", "false")


def test_put_sets_mode_before_content(box):
    box.put("n1", b"secret\n", "/etc/promenade-test/key", mode=0o600)
    out = box.exec("n1", "stat -c '%a %U' /etc/promenade-test/key; cat /etc/promenade-test/key").stdout.decode()
    assert out == "600 root\nsecret\n"


def test_hard_power_cycle_keeps_disk_and_wipe_resets_it(box):
    box.exec("n1", "echo kept > /root/marker && systemctl enable --quiet haproxy")
    box.power_cycle(["n1"])
    assert box.exec("n1", "cat /root/marker").stdout == b"kept\n"
    box.power_off("n1")
    box.wipe("n1")
    box.power_on("n1")
    assert box.exec("n1", "test -e /root/marker", check=False).returncode == 1
    assert box.exec("n1", "hostname").stdout == b"n1\n"


def test_checks_run_through_the_ssh_provider(box, tmp_path):
    key = os.path.join(box.dir, "id_ed25519")
    proxy = [line.split(None, 1)[1] for line in open(box.ssh_config(), encoding="utf-8")
             if line.strip().startswith("ProxyCommand")][0]
    hosts_file = tmp_path / "hosts.yaml"
    hosts_file.write_text(yaml.safe_dump({
        "ssh_options": {"IdentityFile": key, "ProxyCommand": proxy.strip(), "StrictHostKeyChecking": "no",
                        "UserKnownHostsFile": "/dev/null", "LogLevel": "ERROR"},
        "nodes": {"n0": {"host": "192.168.77.10"}, "n1": {"host": "192.168.77.11"}},
    }))
    real = SshHosts(NODES, str(hosts_file))
    try:
        real.up()
        hosts = real.testinfra_hosts(["n0", "n1"])
        good = run_checks(["test_node"], hosts, real.ssh_config(), _context(), str(tmp_path / "good.xml"))
        assert good.ok, good.output
        assert len(good.passed) == 8 and not good.skipped
        bad = run_checks(["test_node"], hosts, real.ssh_config(), _context("192.168.77.99"),
                         str(tmp_path / "bad.xml"))
        assert bad.failed == ["test_node::test_address_is_configured[ssh://n0]"], bad.output
    finally:
        real.down()
    with pytest.raises(GateError, match="no 'power: off:' command"):
        real.power_off("n0")


ETCD_POD = """\
apiVersion: v1
kind: Pod
metadata: {name: kubernetes-etcd, namespace: kube-system}
spec:
  hostNetwork: true
  containers:
    - name: etcd
      image: registry.example/etcd:v3.4
      command: [/usr/local/bin/etcd]
      args: ["--listen-client-urls=http://$(POD_IP):2379", "--advertise-client-urls=http://$(POD_IP):2379"]
      env:
        - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
        - {name: ETCD_NAME, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
        - {name: ETCD_DATA_DIR, value: /var/lib/etcd}
      volumeMounts: [{name: data, mountPath: /var/lib/etcd}]
  volumes: [{name: data, hostPath: {path: /var/lib/etcd/kubernetes}}]
"""


def _wait(box, node, command, attempts=60):
    for _ in range(attempts):
        if box.exec(node, command, check=False).returncode == 0:
            return True
        box.exec(node, "sleep 0.5")
    return False


def test_static_pod_runner_follows_manifests_and_survives_reboot(box):
    health = "ETCDCTL_API=3 etcdctl --endpoints=http://192.168.77.10:2379 endpoint health"
    box.exec("n0", "mkdir -p /var/lib/etcd/kubernetes")
    box.put("n0", ETCD_POD.encode(), "/etc/kubernetes/manifests/etcd.yaml", mode=0o600)
    assert _wait(box, "n0", health)
    assert box.exec("n0", "test -d /var/lib/etcd/kubernetes/member").returncode == 0
    members = box.exec("n0", health.replace("endpoint health", "member list")).stdout.decode()
    assert ", n0, " in members
    box.power_cycle(["n0"])
    assert _wait(box, "n0", health)
    box.exec("n0", "rm /etc/kubernetes/manifests/etcd.yaml")
    assert _wait(box, "n0", "! systemctl is-active static-pod-kubernetes-etcd-etcd.service")
    assert box.exec("n0", "ls /run/systemd/system/ | grep -c static-pod-", check=False).stdout == b"0\n"


def test_clean_removes_what_a_killed_run_left(tmp_path):
    script = tmp_path / "crash.py"
    script.write_text(
        "import os\n"
        "from promenade.gates.sandbox import Sandbox\n"
        "from promenade.gates.provider import Node\n"
        "box = Sandbox([Node('n0', '192.168.77.10')], progress=lambda m: None)\n"
        "box.up()\n"
        "box.exec('n0', 'true')\n"
        "print(box.dir, flush=True)\n"
        "os._exit(3)  # dies without any cleanup, like a SIGKILLed run\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr
    run_dir = done.stdout.strip()
    run = os.path.basename(run_dir)
    assert os.path.ismount(os.path.join(run_dir, "nodes/n0/merged"))
    assert sandbox._netns_names(f"pg-{run}-")
    removed = sandbox.clean_all()
    assert any(item.startswith("nspawn n0") for item in removed)
    assert not os.path.exists(run_dir)
    assert not sandbox._netns_names(f"pg-{run}-")
    assert not any(os.path.exists(p) for p in sandbox._cgroup_dirs(run))
    assert run_dir not in open("/proc/mounts", encoding="utf-8").read()


def test_interrupted_gate_cleans_up(tmp_path):
    scenario = tmp_path / "hang.yaml"
    scenario.write_text(yaml.safe_dump({"nodes": {"n0": "192.168.77.10"}, "stages": [
        {"name": "hang", "exec": {"node": "n0", "command": "sleep 300"}}]}))
    code = ("import sys\nfrom promenade.gates.scenario import run_gate\n"
            f"run_gate({str(scenario)!r}, {str(tmp_path / 'out')!r}, progress=lambda m: print(m, flush=True))\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:  # bounded: the child exits or the timeout below kills it
            if "hang ..." in line:
                break
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode != 0
    assert not [run for run in os.listdir(sandbox.runs_dir())
                if sandbox._read_pid(os.path.join(sandbox.runs_dir(), run, "owner.pid")) == proc.pid]
