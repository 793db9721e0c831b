"""The etcd anchor against a real TLS etcd cluster on loopback.

Every member is started the way kubelet would start it: from the static pod manifest the
anchor renders from the etcd chart's template and values (the test's ``Kubelet`` runs the
manifest's container command). Membership is asserted exactly after every step.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from promenade.fileio import atomic_write

REPO = Path(__file__).resolve().parents[1]
ANCHOR_DIR = REPO / "promenade" / "anchor"
CHART = REPO / "charts" / "etcd"
TEMPLATE = CHART / "files" / "kubernetes-etcd.yaml"
sys.path.insert(0, str(ANCHOR_DIR))
import anchor  # noqa: E402
import etcd_anchor  # noqa: E402


def _pem_key(key) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _certificate(subject: str, issuer_key, issuer_name, key, ca: bool) -> str:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA and one serverAuth+clientAuth certificate for 127.0.0.1 (members and etcdctl)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("etcd-test-ca", ca_key, None, ca_key, ca=True)
    ca_name = x509.load_pem_x509_certificate(ca.encode()).subject
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = _certificate("etcd-member", ca_key, ca_name, leaf_key, ca=False)
    directory = tmp_path_factory.mktemp("pki")
    files = {"ca": ca, "cert": leaf, "key": _pem_key(leaf_key)}
    for name, text in files.items():
        (directory / f"{name}.pem").write_text(text)
        os.chmod(directory / f"{name}.pem", 0o600)
    return {**files, "dir": directory}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Cluster:
    """Loopback etcd members, each with its own host directories, plus a minimal kubelet."""

    def __init__(self, root: Path, pki: dict):
        self.root = root
        self.pki = pki
        self.urls: dict[str, tuple[str, str]] = {}
        self.running: dict[str, tuple[subprocess.Popen, bytes]] = {}
        self.powered_off: set[str] = set()
        self.chart_values = yaml.safe_load((CHART / "values.yaml").read_text())

    # --- layout -----------------------------------------------------------------------
    def url(self, name: str, which: str) -> str:
        if name not in self.urls:
            self.urls[name] = (f"https://127.0.0.1:{_free_port()}", f"https://127.0.0.1:{_free_port()}")
        return self.urls[name][0 if which == "client" else 1]

    def host(self, name: str, *parts: str) -> str:
        return str(self.root / name / Path(*parts))

    def values(self, name: str) -> dict:
        tls = {"cert": self.pki["cert"], "key": self.pki["key"]}
        values = json.loads(json.dumps(self.chart_values))
        values["etcd"].update(host_etc_path=self.host(name, "etc"), host_data_path=self.host(name, "data"),
                              listen_address="127.0.0.1", heartbeat_interval=50, election_timeout=500)
        values["secrets"]["tls"] = {"client": {"ca": self.pki["ca"]}, "peer": {"ca": self.pki["ca"]}}
        values["nodes"] = [{"name": name, "tls": {"client": tls, "peer": tls}}]
        return values

    def values_file(self, name: str) -> str:
        path = Path(self.host(name, "values.json"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.values(name)))
        return str(path)

    def manifest(self, name: str) -> Path:
        return Path(self.host(name, "manifests", "kubernetes-etcd.yaml"))

    # --- the anchor -------------------------------------------------------------------
    def anchor(self, command: str, name: str, *extra: str, threshold: int = 3, unhealthy: float = 300,
               retry: float = 30, background: bool = False):
        """Run the etcd anchor for member ``name``: the CompletedProcess, or with ``background``
        the running Popen (text stderr pipe)."""
        endpoints = ",".join(self.url(n, "client") for n in self.running) or self.url(name, "client")
        args = [
            sys.executable, str(ANCHOR_DIR / "etcd_anchor.py"), command,
            f"--endpoints={endpoints}", f"--cacert={self.pki['dir']}/ca.pem",
            f"--cert={self.pki['dir']}/cert.pem", f"--key={self.pki['dir']}/key.pem",
            f"--name={name}", f"--peer-url={self.url(name, 'peer')}", f"--client-url={self.url(name, 'client')}",
            f"--data-dir={self.host(name, 'data')}", f"--manifest-template={TEMPLATE}",
            f"--manifest-out={self.manifest(name)}", f"--values={self.values_file(name)}",
            f"--templates={CHART / 'files'}", f"--var=node.name={name}",
            f"--auxiliary-threshold={threshold}", f"--unhealthy-seconds={unhealthy}", f"--retry-seconds={retry}",
            *extra,
        ]
        if background:
            return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        return subprocess.run(args, capture_output=True, text=True, timeout=120)

    def bootstrap(self, names: list[str]) -> None:
        """Start a new cluster of ``names`` as genesis does: files and manifests with state ``new``."""
        initial = ",".join(f"{n}={self.url(n, 'peer')}" for n in names)
        for name in names:
            values = self.values(name)
            context = anchor.build_context(values, {"node": {"name": name}})
            anchor.sync(values, context, str(CHART / "files"), "/")
            manifest = etcd_anchor.render_manifest(
                str(TEMPLATE), context, initial_cluster_state="new", name=name, peer_url=self.url(name, "peer"),
                client_url=self.url(name, "client"), data_dir=self.host(name, "data"), initial_cluster=initial)
            atomic_write(str(self.manifest(name)), manifest, 0o600)
        self.kubelet()
        self.wait(lambda: len(self.healthy(names)) == len(names), "bootstrap members healthy")

    # --- kubelet ----------------------------------------------------------------------
    def kubelet(self) -> None:
        """One kubelet sync: (re)start members whose manifest appeared or changed or whose
        process exited; stop those whose manifest went."""
        for name in list(self.urls):
            if name in self.powered_off:
                continue
            path = self.manifest(name)
            content = path.read_bytes() if path.exists() else None
            current = self.running.get(name)
            if current and (current[1] != content or current[0].poll() is not None):
                self.stop(name)
            if content is not None and (name not in self.running):
                pod = yaml.safe_load(content)
                log = open(self.host(name, "etcd.log"), "ab")
                process = subprocess.Popen(pod["spec"]["containers"][0]["command"], stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True)
                log.close()
                self.running[name] = (process, content)

    def stop(self, name: str) -> None:
        process, _ = self.running.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def power_off(self, name: str) -> None:
        self.powered_off.add(name)
        self.stop(name)

    def close(self) -> None:
        for name in list(self.running):
            self.stop(name)

    # --- observations -----------------------------------------------------------------
    def ctl(self) -> etcd_anchor.Etcdctl:
        endpoints = [self.url(n, "client") for n in self.running]
        return etcd_anchor.Etcdctl("etcdctl", endpoints, f"{self.pki['dir']}/ca.pem",
                                   f"{self.pki['dir']}/cert.pem", f"{self.pki['dir']}/key.pem")

    def healthy(self, names: list[str]) -> set[str]:
        return self.ctl().healthy([self.url(n, "client") for n in names])

    def raw_members(self) -> list[etcd_anchor.Member]:
        return self.wait(lambda: self._try_members(), "member list")

    def _try_members(self):
        try:
            return self.ctl().members()
        except etcd_anchor.EtcdError:
            return None

    def members(self) -> list[tuple[str, str]]:
        """Sorted ``(name, state)``: state is ``voter``, ``learner`` or ``unstarted``; names by peer URL."""
        by_peer = {peer: name for name, (_, peer) in self.urls.items()}
        result = []
        for member in self.raw_members():
            state = "unstarted" if not member.started else "learner" if member.learner else "voter"
            result.append((by_peer[member.peer_urls[0]], state))
        return sorted(result)

    def leader(self) -> str:
        by_id = {m.id: m.name for m in self.raw_members()}
        leader = self.ctl().leader([self.url(n, "client") for n in self.running])
        return by_id[leader]

    def wait_started(self, name: str) -> None:
        """Let the kubelet run until ``name`` has started as a cluster member."""
        def started():
            self.kubelet()
            return any(member == name and state != "unstarted" for member, state in self.members())
        try:
            self.wait(started, f"{name} started", timeout=60)
        except AssertionError as exc:
            log = Path(self.host(name, "etcd.log"))
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
            raise AssertionError(f"{exc}; members {self.members()}; {name}'s etcd log ends:\n{tail}") from None

    @staticmethod
    def wait(condition, what: str, timeout: float = 30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = condition()
            if result:
                return result
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def cluster(tmp_path, pki):
    cluster = Cluster(tmp_path, pki)
    try:
        yield cluster
    finally:
        cluster.close()


def voters(*names: str) -> list[tuple[str, str]]:
    return sorted((name, "voter") for name in names)


def passed(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr
    return result.stderr


AUX = ["n0-auxiliary-0", "n0-auxiliary-1"]


def test_joins_remove_auxiliaries_at_threshold_then_genesis_leaves(cluster):
    cluster.bootstrap(["n0", *AUX])
    assert cluster.members() == voters("n0", *AUX)

    # n1 joins as a learner, kubelet starts it from the manifest, the next pass promotes it
    log = passed(cluster.anchor("reconcile", "n1"))
    assert "added n1" in log
    assert cluster.members() == sorted(voters("n0", *AUX) + [("n1", "unstarted")])
    assert "--initial-cluster-state=existing" in cluster.manifest("n1").read_text()
    cluster.kubelet()
    cluster.wait_started("n1")
    assert "promoted n1" in passed(cluster.anchor("reconcile", "n1"))
    assert cluster.members() == voters("n0", "n1", *AUX)  # 2 real members < threshold 3

    # n2 joins; while it is a learner the auxiliaries stay
    passed(cluster.anchor("reconcile", "n2"))
    cluster.kubelet()
    cluster.wait_started("n2")
    assert cluster.members() == sorted(voters("n0", "n1", *AUX) + [("n2", "learner")])

    # an auxiliary leads: the pass that makes 3 real members hands leadership off first
    ctl = cluster.ctl()
    aux0 = next(m for m in cluster.raw_members() if m.name == AUX[0])
    current = next(m for m in cluster.raw_members() if m.name == cluster.leader())
    if current.id != aux0.id:
        ctl.run("move-leader", aux0.hex_id, endpoints=list(current.client_urls))
    assert cluster.leader() == AUX[0]
    log = passed(cluster.anchor("reconcile", "n2"))
    assert "promoted n2" in log and f"moved leadership from {AUX[0]}" in log
    assert cluster.members() == voters("n0", "n1", "n2")
    assert cluster.leader() in {"n0", "n1", "n2"}

    # genesis cleans up what the auxiliary members left on its host
    aux_dirs = [cluster.host(name) for name in AUX]
    passed(cluster.anchor("reconcile", "n0", *[f"--auxiliary-cleanup={d}" for d in aux_dirs]))
    assert not any(os.path.exists(d) for d in aux_dirs)
    cluster.kubelet()

    # teardown of genesis: it leaves the cluster and its manifest and data go
    assert "removed member n0" in passed(cluster.anchor("remove-self", "n0"))
    assert cluster.members() == voters("n1", "n2")
    assert not cluster.manifest("n0").exists() and not os.path.exists(cluster.host("n0", "data"))
    cluster.kubelet()
    assert "n0" not in cluster.running
    assert cluster.healthy(["n1", "n2"]) == {cluster.url("n1", "client"), cluster.url("n2", "client")}


def test_unhealthy_removal_failed_join_wipe_and_retry(cluster):
    cluster.bootstrap(["n0", "n1", "n2"])
    cluster.power_off("n2")

    # first pass notices n2 is down; the pass after the threshold removes it
    passed(cluster.anchor("reconcile", "n0", unhealthy=1.5))
    assert cluster.members() == voters("n0", "n1", "n2")
    time.sleep(1.6)
    assert "removed member n2" in passed(cluster.anchor("reconcile", "n0", unhealthy=1.5))
    assert cluster.members() == voters("n0", "n1")

    # a failed earlier join left data behind: it is wiped before n3 is added
    stale = Path(cluster.host("n3", "data", "member", "wal"))
    stale.mkdir(parents=True)
    (stale / "0000000000000000-0000000000000000.wal").write_bytes(b"junk")
    passed(cluster.anchor("reconcile", "n3"))
    assert not stale.exists()
    assert cluster.members() == sorted(voters("n0", "n1") + [("n3", "unstarted")])
    first_id = next(m.id for m in cluster.raw_members() if not m.started)

    # only one learner at a time: n4 retries with backoff, gives up within its bound, exit 2
    result = cluster.anchor("reconcile", "n4", retry=2)
    assert result.returncode == 2, result.stderr
    assert "too many learner members" in result.stderr and "retrying" in result.stderr
    assert cluster.members() == sorted(voters("n0", "n1") + [("n3", "unstarted")])

    # n3 never started: past the threshold its own pass removes it, wipes, and adds it again
    passed(cluster.anchor("reconcile", "n3", unhealthy=1))
    time.sleep(1.1)
    log = passed(cluster.anchor("reconcile", "n3", unhealthy=1))
    assert "removed member n3" in log and "added n3" in log
    assert cluster.members() == sorted(voters("n0", "n1") + [("n3", "unstarted")])
    assert next(m.id for m in cluster.raw_members() if not m.started) != first_id
    cluster.kubelet()
    cluster.wait_started("n3")
    passed(cluster.anchor("reconcile", "n3"))
    assert cluster.members() == voters("n0", "n1", "n3")

    # the DaemonSet's loop: n3 started moments ago, so adding n4 hits "unhealthy cluster" and
    # succeeds after retrying; SIGTERM (pod deleted) ends the loop and n4 leaves again
    loop = cluster.anchor("run", "n4", "--period=0.5", "--remove-on-stop", background=True)
    try:
        cluster.wait(lambda: ("n4", "unstarted") in cluster.members(), "n4 added by the loop")
        assert cluster.members() == sorted(voters("n0", "n1", "n3") + [("n4", "unstarted")])
    finally:
        loop.send_signal(signal.SIGTERM)
        try:
            _, log = loop.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            loop.kill()
            raise
    assert loop.returncode == 0, log
    assert "retrying" in log and "added n4" in log and "removed member n4" in log
    assert cluster.members() == voters("n0", "n1", "n3")
