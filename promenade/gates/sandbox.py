"""Sandbox nodes on this machine: network namespaces + ``systemd-nspawn --boot``.

Layout of one run (``<cache>/runs/<run>/``, see :mod:`promenade.gates.image`):

* a hub network namespace ``pg-<run>-hub`` holding the bridge (192.168.77.1) and one veth per
  node; forwarding is off and nothing is routed to the host, so no packet leaves the machine;
* per node a namespace ``pg-<run>-<node>`` with ``eth0`` at the node's address, an overlay
  root (``lower`` = cached image, ``upper`` = the node's disk) and ``systemd-nspawn --boot``
  started from its own cgroup (``--register=no --keep-unit``: the host has no systemd);
* ssh from the host through a ``ProxyCommand`` relay run inside the hub, with a ``ControlPath``.

Every resource is recorded under the run directory; :func:`cleanup_run` removes them and is
used by :meth:`Sandbox.down`, the signal/atexit handlers and ``doit gate:clean``.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

from promenade.gates import image, relay, static_pods
from promenade.gates.provider import GateError, Node, Provider

HUB_ADDRESS = "192.168.77.1/24"
SERVICES = "services"  # pids of processes started in the hub (``doit serve``)
STATIC_PODS_UNITS = {
    "promenade-static-pods.service": "[Unit]\nDescription=Run static pod manifests as units (sandbox only)\n"
    "[Service]\nType=oneshot\nExecStart=/usr/local/sbin/promenade-static-pods\n"
    "[Install]\nWantedBy=multi-user.target\n",
    "promenade-static-pods.path": "[Unit]\nDescription=Watch the static pod manifests (sandbox only)\n"
    "[Path]\nPathChanged=/etc/kubernetes/manifests\n[Install]\nWantedBy=multi-user.target\n",
}
CGROUP_ROOTS = ("/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified")
CGROUP_NAME = "promenade-gate"
BOOT_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0


def runs_dir() -> str:
    return os.path.join(image.cache_dir(), "runs")


def _sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise GateError(f"`{' '.join(argv)}` failed: {result.stderr.strip()}")
    return result


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _read_pid(path: str) -> int | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return int(handle.read().strip())
    except (FileNotFoundError, ValueError):
        return None


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, comm) of the direct children of ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as handle:
                stat = handle.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if ppid == pid:
            found.append((int(entry), comm))
    return found


def _netns_names(prefix: str) -> list[str]:
    result = _sh("ip", "netns", "list", check=False)
    return [line.split()[0] for line in result.stdout.splitlines() if line.startswith(prefix)]


def _cgroup_dirs(run: str, node: str | None = None) -> list[str]:
    parts = [CGROUP_NAME, run] + ([node] if node else [])
    return [os.path.join(root, *parts) for root in CGROUP_ROOTS if os.path.isdir(root)]


def _remove_cgroup(path: str) -> None:
    """Kill whatever is left in a cgroup tree, then remove it depth-first."""
    if not os.path.isdir(path):
        return
    for _ in range(50):
        pids = set()
        for dirpath, _dirs, _files in os.walk(path):
            try:  # systemd inside may remove its own cgroups meanwhile
                with open(os.path.join(dirpath, "cgroup.procs"), encoding="utf-8") as handle:
                    pids.update(int(p) for p in handle.read().split() if int(p) > 0)
            except OSError:
                continue
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    for dirpath, _dirs, _files in sorted(os.walk(path), key=lambda w: -w[0].count("/")):
        try:
            os.rmdir(dirpath)
        except OSError:
            pass


def cleanup_run(run_dir: str) -> list[str]:
    """Remove every resource of the run in ``run_dir``; return what was removed."""
    run = os.path.basename(run_dir)
    removed = []
    nodes_dir = os.path.join(run_dir, "nodes")
    # ssh control masters (and their relays) run from the host; their sockets live in run_dir
    ssh_config = os.path.join(run_dir, "ssh_config")
    if os.path.isdir(nodes_dir) and os.path.exists(ssh_config):
        for node in sorted(os.listdir(nodes_dir)):
            if os.path.exists(os.path.join(run_dir, f"cm-{node}")):
                _sh("ssh", "-F", ssh_config, "-O", "exit", node, check=False)
                removed.append(f"ssh master {node}")
    services = os.path.join(run_dir, SERVICES)
    for entry in sorted(os.listdir(services)) if os.path.isdir(services) else []:
        if _alive(int(entry)):
            os.kill(int(entry), signal.SIGKILL)
            removed.append(f"service {entry}")
    if os.path.isdir(nodes_dir):
        for node in sorted(os.listdir(nodes_dir)):
            node_dir = os.path.join(nodes_dir, node)
            pid = _read_pid(os.path.join(node_dir, "nspawn.pid"))
            if pid and _alive(pid):
                os.kill(pid, signal.SIGKILL)
                removed.append(f"nspawn {node} ({pid})")
            for path in _cgroup_dirs(run, node):
                _remove_cgroup(path)
            merged = os.path.join(node_dir, "merged")
            if os.path.ismount(merged):
                _sh("umount", "-l", merged, check=False)
                removed.append(f"mount {merged}")
            shutil.rmtree(f"/run/systemd/nspawn/propagate/pg-{run}-{node}", ignore_errors=True)
    for path in _cgroup_dirs(run):
        _remove_cgroup(path)
    for ns in _netns_names(f"pg-{run}-"):
        _sh("ip", "netns", "del", ns, check=False)
        removed.append(f"netns {ns}")
    shutil.rmtree(run_dir, ignore_errors=True)
    return removed


def clean_all(include_live: bool = False) -> list[str]:
    """Clean up runs whose owning process is gone (all runs with ``include_live``), and
    namespaces or cgroups of runs whose directory has already been removed."""
    removed = []
    runs = sorted(os.listdir(runs_dir())) if os.path.isdir(runs_dir()) else []
    for run in runs:
        run_dir = os.path.join(runs_dir(), run)
        owner = _read_pid(os.path.join(run_dir, "owner.pid"))
        if include_live or not (owner and _alive(owner)):
            removed += cleanup_run(run_dir) or [f"run dir {run_dir}"]
    live = set(os.listdir(runs_dir())) if os.path.isdir(runs_dir()) else set()
    for ns in _netns_names("pg-"):
        if ns.split("-")[1] not in live:
            _sh("ip", "netns", "del", ns, check=False)
            removed.append(f"netns {ns}")
    for root in CGROUP_ROOTS:
        parent = os.path.join(root, CGROUP_NAME)
        for run in sorted(os.listdir(parent)) if os.path.isdir(parent) else []:
            if os.path.isdir(os.path.join(parent, run)) and run not in live:
                _remove_cgroup(os.path.join(parent, run))
                removed.append(f"cgroup {parent}/{run}")
    return removed


class Sandbox(Provider):
    """Local nodes booted with systemd-nspawn, each in its own network namespace."""

    name = "sandbox"

    def __init__(self, nodes: list[Node], progress=print):
        super().__init__(nodes)
        self.progress = progress
        self.run = uuid.uuid4().hex[:8]
        self.dir = os.path.join(runs_dir(), self.run)
        self.hub = f"pg-{self.run}-hub"
        self.image = None
        self._procs: dict[str, subprocess.Popen] = {}
        self._network_up = False

    # paths -----------------------------------------------------------------------------
    def _node_dir(self, name: str, *parts: str) -> str:
        return os.path.join(self.dir, "nodes", name, *parts)

    def _netns(self, name: str) -> str:
        """Name of the node's network namespace, also its nspawn machine name."""
        return f"pg-{self.run}-{name}"

    def ssh_config(self) -> str:
        return os.path.join(self.dir, "ssh_config")

    # setup -----------------------------------------------------------------------------
    def _prepare(self) -> None:
        self.image = image.ensure_image(progress=self.progress)
        os.makedirs(self.dir, mode=0o700)
        with open(os.path.join(self.dir, "owner.pid"), "w", encoding="utf-8") as handle:
            handle.write(f"{os.getpid()}\n")
        atexit.register(self.down)
        key = os.path.join(self.dir, "id_ed25519")
        _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"promenade-gate-{self.run}", "-f", key)
        proxy = f"ip netns exec {self.hub} {sys.executable} {relay.__file__} %h %p"
        lines = []
        for node in self.nodes.values():
            lines += [f"Host {node.name}", f"  HostName {node.address}"]
        lines += [
            "Host *", "  User root", f"  IdentityFile {key}", "  IdentitiesOnly yes",
            "  StrictHostKeyChecking no", "  UserKnownHostsFile /dev/null", "  LogLevel ERROR",
            "  ControlMaster auto", f"  ControlPath {self.dir}/cm-%n", "  ControlPersist 300",
            "  ConnectTimeout 5", "  ServerAliveInterval 5", "  ServerAliveCountMax 3",
            f"  ProxyCommand {proxy}",
        ]
        with open(self.ssh_config(), "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")

    def _network(self) -> None:
        hub = self.hub
        _sh("ip", "netns", "add", hub)
        _sh("ip", "netns", "exec", hub, "sysctl", "-qw", "net.ipv4.ip_forward=0")
        _sh("ip", "-n", hub, "link", "set", "lo", "up")
        _sh("ip", "-n", hub, "link", "add", "br0", "type", "bridge")
        _sh("ip", "-n", hub, "addr", "add", HUB_ADDRESS, "dev", "br0")
        _sh("ip", "-n", hub, "link", "set", "br0", "up")
        for node in self.nodes.values():
            ns = self._netns(node.name)
            _sh("ip", "netns", "add", ns)
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
            # the veth pair is created inside the hub, never in the host's namespace
            _sh("ip", "-n", hub, "link", "add", f"v-{node.name}", "type", "veth", "peer", "name", "eth0")
            _sh("ip", "-n", hub, "link", "set", "eth0", "netns", ns)
            _sh("ip", "-n", hub, "link", "set", f"v-{node.name}", "master", "br0", "up")
            _sh("ip", "-n", ns, "addr", "add", f"{node.address}/24", "dev", "eth0")
            _sh("ip", "-n", ns, "link", "set", "eth0", "up")
        self._network_up = True

    def _mount(self, name: str) -> str:
        merged = self._node_dir(name, "merged")
        if not os.path.ismount(merged):
            for part in ("upper", "work", "merged"):
                os.makedirs(self._node_dir(name, part), exist_ok=True)
            _sh("mount", "-t", "overlay", "overlay", "-o",
                f"lowerdir={self.image},upperdir={self._node_dir(name, 'upper')},"
                f"workdir={self._node_dir(name, 'work')}", merged)
        return merged

    def _personalise(self, name: str, root: str) -> None:
        """Hostname, hosts file, root's ssh key and host keys on the node's disk."""
        with open(os.path.join(root, "etc/hostname"), "w", encoding="utf-8") as handle:
            handle.write(f"{name}\n")
        hosts = ["127.0.0.1 localhost", "::1 localhost"]
        hosts += [f"{node.address} {node.name}" for node in self.nodes.values()]
        with open(os.path.join(root, "etc/hosts"), "w", encoding="utf-8") as handle:
            handle.write("\n".join(hosts) + "\n")
        ssh_dir = os.path.join(root, "root/.ssh")
        os.makedirs(ssh_dir, mode=0o700, exist_ok=True)
        shutil.copyfile(os.path.join(self.dir, "id_ed25519.pub"), os.path.join(ssh_dir, "authorized_keys"))
        if not os.path.exists(os.path.join(root, "etc/ssh/ssh_host_ed25519_key")):
            _sh("chroot", root, "ssh-keygen", "-A")
        self._install_static_pods(root)

    @staticmethod
    def _install_static_pods(root: str) -> None:
        """The stand-in for a kubelet's static pods (see :mod:`promenade.gates.static_pods`)."""
        runner = os.path.join(root, "usr/local/sbin/promenade-static-pods")
        shutil.copyfile(static_pods.__file__, runner)
        os.chmod(runner, 0o755)
        wants = os.path.join(root, "etc/systemd/system/multi-user.target.wants")
        os.makedirs(wants, exist_ok=True)
        for unit, text in STATIC_PODS_UNITS.items():
            with open(os.path.join(root, "etc/systemd/system", unit), "w", encoding="utf-8") as handle:
                handle.write(text)
            link = os.path.join(wants, unit)
            if not os.path.lexists(link):
                os.symlink(f"/etc/systemd/system/{unit}", link)

    def _boot(self, name: str) -> None:
        start = time.monotonic()
        root = self._mount(name)
        self._personalise(name, root)
        cgroups = _cgroup_dirs(self.run, name)
        for path in cgroups:
            os.makedirs(path, exist_ok=True)

        def enter_cgroup() -> None:  # runs in the child before exec
            for path in cgroups:
                with open(os.path.join(path, "cgroup.procs"), "w", encoding="utf-8") as handle:
                    handle.write(str(os.getpid()))

        log = open(self._node_dir(name, "console.log"), "ab")  # noqa: SIM115 (owned by the child)
        argv = ["systemd-nspawn", "-D", root, "--boot", f"--network-namespace-path=/run/netns/{self._netns(name)}",
                "--register=no", "--keep-unit", f"--hostname={name}", f"--machine={self._netns(name)}",
                "--console=read-only", "--resolv-conf=off", "--timezone=off", "--link-journal=no"]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                preexec_fn=enter_cgroup, start_new_session=True)
        log.close()
        self._procs[name] = proc
        with open(self._node_dir(name, "nspawn.pid"), "w", encoding="utf-8") as handle:
            handle.write(f"{proc.pid}\n")

        def alive() -> None:
            if proc.poll() is not None:
                raise GateError(f"{name}: systemd-nspawn exited {proc.returncode}; "
                                f"see {self._node_dir(name, 'console.log')}")

        self._wait_ready(name, BOOT_TIMEOUT, 0.3, alive)
        self.progress(f"  {name}: booted in {time.monotonic() - start:.1f} s")

    def gate_address(self) -> str:
        return HUB_ADDRESS.split("/")[0]

    def spawn_service(self, argv: list[str], log_path: str) -> subprocess.Popen:
        """Run ``argv`` inside the hub namespace (recorded, so cleanup kills it)."""
        proc = super().spawn_service(["ip", "netns", "exec", self.hub, *argv], log_path)
        os.makedirs(os.path.join(self.dir, SERVICES), exist_ok=True)
        with open(os.path.join(self.dir, SERVICES, str(proc.pid)), "w", encoding="utf-8"):
            pass
        return proc

    def _leader(self, name: str) -> int | None:
        """PID of the node's init (systemd) as seen from the host."""
        pid = _read_pid(self._node_dir(name, "nspawn.pid"))
        if pid is None:
            return None
        return next((child for child, comm in _children(pid) if comm == "systemd"), None)

    # lifecycle -------------------------------------------------------------------------
    def up(self, names: list[str] | None = None) -> None:
        if not self._network_up:
            self._prepare()
            self._network()
        names = names or list(self.nodes)
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(names)) as pool:
            for future in [pool.submit(self._boot, name) for name in names]:
                future.result()

    def power_off(self, name: str, hard: bool = True) -> None:
        proc = self._procs.pop(name, None)
        if proc is None:
            return
        self._close_master(name)
        if hard:
            leader = self._leader(name)
            os.kill(leader or proc.pid, signal.SIGKILL)
        else:
            self._ssh(name, "systemctl poweroff", capture_output=True, stdin=subprocess.DEVNULL, timeout=30)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)
        for path in _cgroup_dirs(self.run, name):
            _remove_cgroup(path)

    def power_on(self, name: str) -> None:
        if name not in self._procs:
            self._boot(name)

    def wipe(self, name: str) -> None:
        if name in self._procs:
            raise GateError(f"{name}: power it off before wiping its disk")
        merged = self._node_dir(name, "merged")
        if os.path.ismount(merged):
            _sh("umount", merged)
        for part in ("upper", "work"):
            shutil.rmtree(self._node_dir(name, part), ignore_errors=True)

    def down(self) -> None:
        if os.path.isdir(self.dir):
            cleanup_run(self.dir)
        for proc in self._procs.values():
            proc.wait(timeout=STOP_TIMEOUT)
        self._procs.clear()
        self._network_up = False
