"""The node provider interface every scenario and check talks to.

A provider owns a set of named nodes. Everything that happens *on* a node goes over ssh
with the provider's ``ssh_config()`` (sandbox and real machines alike, so the checks that pass
here are the ones that run against hardware); the lifecycle operations (``up``, power,
``wipe``, ``down``) are what differ between providers.
"""

from __future__ import annotations

import concurrent.futures
import shlex
import subprocess
import time
from dataclasses import dataclass, field


class GateError(Exception):
    """A gate step failed (the message says which node and command)."""


@dataclass(frozen=True)
class Node:
    """One node of a scenario: its name (also its hostname) and IPv4 address."""

    name: str
    address: str
    labels: dict = field(default_factory=dict, compare=False)


class Provider:
    """Base class: ssh-based exec/put/testinfra; subclasses implement the lifecycle."""

    name = "provider"
    #: whether Kubernetes binaries (kubelet, kube-apiserver) can exist on these nodes
    has_kubernetes = False

    def __init__(self, nodes: list[Node]):
        self.nodes = {node.name: node for node in nodes}

    # lifecycle -------------------------------------------------------------------------
    def up(self, names: list[str] | None = None) -> None:
        """Create (if needed) and boot ``names`` (default: every node); return when ssh works."""
        raise NotImplementedError

    def power_off(self, name: str, hard: bool = True) -> None:
        """Stop a node; ``hard`` cuts power without a clean shutdown."""
        raise NotImplementedError

    def power_on(self, name: str) -> None:
        """Boot a powered-off node with its disk as it was; return when ssh works."""
        raise NotImplementedError

    def wipe(self, name: str) -> None:
        """Give a powered-off node a fresh disk (the image as built)."""
        raise NotImplementedError

    def down(self) -> None:
        """Release every resource; safe to call more than once and after failures."""
        raise NotImplementedError

    def power_cycle(self, names: list[str]) -> None:
        """Hard power-off ``names`` together, then boot them together (a site-wide outage)."""
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(names)) as pool:
            list(pool.map(self.power_off, names))
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(names)) as pool:
            list(pool.map(self.power_on, names))

    def ssh_config(self) -> str:
        """Path of an ssh_config file with a ``Host`` entry per node name."""
        raise NotImplementedError

    def gate_address(self) -> str | None:
        """Address at which nodes reach services the gate runs (``doit serve``), if any."""
        return None

    def spawn_service(self, argv: list[str], log_path: str) -> subprocess.Popen:
        """Start a long-running process that nodes can reach at :meth:`gate_address`."""
        with open(log_path, "ab") as log:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    # shared over ssh ------------------------------------------------------------------
    def address(self, name: str) -> str:
        return self.nodes[name].address

    def _ssh(self, name: str, remote: str, **kwargs) -> subprocess.CompletedProcess:
        argv = ["ssh", "-F", self.ssh_config(), "-o", "BatchMode=yes", name, remote]
        return subprocess.run(argv, **kwargs)

    def _close_master(self, name: str) -> None:
        """Close the ssh connection kept open for ``name`` (before it goes away)."""
        subprocess.run(["ssh", "-F", self.ssh_config(), "-O", "exit", name], capture_output=True)

    def _wait_ready(self, name: str, timeout: float, interval: float, alive=None) -> None:
        """Return once ``name`` answers over ssh with its boot finished; ``alive()`` may raise
        :class:`GateError` when the node can no longer come up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if alive is not None:
                alive()
            if self._ssh(name, "systemctl is-system-running --wait >/dev/null; true", capture_output=True,
                         stdin=subprocess.DEVNULL, timeout=timeout).returncode == 0:
                return
            time.sleep(interval)
        raise GateError(f"{name}: not reachable over ssh after {timeout:.0f} s")

    def exec(self, name: str, command: str, check: bool = True, timeout: float = 600,
             input: bytes | None = None) -> subprocess.CompletedProcess:
        """Run a shell command as root on ``name``; output is captured (bytes)."""
        try:
            result = self._ssh(name, command, input=input, capture_output=True, timeout=timeout,
                               stdin=None if input is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise GateError(f"{name}: `{command}` timed out after {timeout:.0f} s") from exc
        if check and result.returncode != 0:
            tail = (result.stdout + result.stderr).decode(errors="replace")[-2000:]
            raise GateError(f"{name}: `{command}` exited {result.returncode}:\n{tail}")
        return result

    def put(self, name: str, data: bytes, remote_path: str, mode: int = 0o600) -> None:
        """Write ``data`` to ``remote_path`` on ``name`` (parent created, mode set before content)."""
        quoted = shlex.quote(remote_path)
        self.exec(name, f"mkdir -p $(dirname {quoted}) && install -m {mode:o} /dev/null {quoted}"
                        f" && cat > {quoted}", input=data)

    def testinfra_hosts(self, names: list[str]) -> list[str]:
        """testinfra ``--hosts`` values for ``names`` (used with ``--ssh-config``)."""
        return [f"ssh://{name}" for name in names]

    def collect_logs(self, name: str) -> bytes:
        """The node's journal and unit states, for failure reports."""
        result = self.exec(name, "systemctl --no-pager list-units --all --failed; "
                                 "journalctl --no-pager -b -n 2000", check=False, timeout=60)
        return result.stdout + result.stderr
