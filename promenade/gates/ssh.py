"""Existing machines (real VMs or bare metal) reached over ssh, listed in a hosts file.

Hosts file (YAML)::

    kubernetes: true            # kubelet/apiserver can run there: checks that need them run
    gate_address: 10.23.0.1     # optional: nodes fetch scripts from `doit serve` run here
    ssh_options:                # optional, added to every host's ssh_config entry
      IdentityFile: ~/.ssh/gate
    power:                      # optional shell commands run here; {name} is the node name
      off: virsh destroy {name}
      on: virsh start {name}
      wipe: virsh vol-upload ... {name}
    nodes:
      n0: {host: 10.23.0.10}    # ssh target; 'user' (default root) and 'port' optional
      n1: {host: 10.23.0.11}

Node addresses and names come from the scenario; ``host`` only says how to reach a node.
Stages that need a power command the file does not give fail with that message.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import yaml

from promenade.gates.provider import GateError, Node, Provider

READY_TIMEOUT = 600.0


class SshHosts(Provider):
    """Nodes that already exist; power and wipe go through commands from the hosts file."""

    name = "ssh"

    def __init__(self, nodes: list[Node], hosts_file: str, progress=print):
        super().__init__(nodes)
        self.progress = progress
        with open(hosts_file, encoding="utf-8") as handle:
            spec = yaml.safe_load(handle) or {}
        missing = sorted(set(self.nodes) - set(spec.get("nodes") or {}))
        if missing:
            raise GateError(f"{hosts_file}: no entry for node(s) {', '.join(missing)}")
        self.spec = spec
        self.has_kubernetes = bool(spec.get("kubernetes", False))
        self.dir = tempfile.mkdtemp(prefix="promenade-gate-ssh-")
        self._write_config()

    def _write_config(self) -> None:
        lines = []
        for name in self.nodes:
            entry = self.spec["nodes"][name] or {}
            lines += [f"Host {name}", f"  HostName {entry.get('host', self.nodes[name].address)}",
                      f"  User {entry.get('user', 'root')}", f"  Port {entry.get('port', 22)}"]
        lines += ["Host *", "  ControlMaster auto", f"  ControlPath {self.dir}/cm-%n",
                  "  ControlPersist 300", "  ConnectTimeout 10", "  ServerAliveInterval 5"]
        lines += [f"  {key} {value}" for key, value in (self.spec.get("ssh_options") or {}).items()]
        with open(self.ssh_config(), "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")

    def ssh_config(self) -> str:
        return os.path.join(self.dir, "ssh_config")

    def gate_address(self) -> str | None:
        return self.spec.get("gate_address")

    def _power(self, action: str, name: str) -> None:
        command = (self.spec.get("power") or {}).get(action)
        if not command:
            raise GateError(f"ssh provider: the hosts file gives no 'power: {action}:' command (needed for {name})")
        result = subprocess.run(command.format(name=name), shell=True, capture_output=True, text=True)
        if result.returncode != 0:
            raise GateError(f"{name}: power {action} command failed: {result.stderr.strip()}")

    def up(self, names: list[str] | None = None) -> None:
        for name in names or list(self.nodes):
            self._wait_ready(name, READY_TIMEOUT, 2)

    def power_off(self, name: str, hard: bool = True) -> None:
        self._close_master(name)
        if hard:
            self._power("off", name)
        else:
            self._ssh(name, "systemctl poweroff", capture_output=True, stdin=subprocess.DEVNULL, timeout=60)

    def power_on(self, name: str) -> None:
        self._power("on", name)
        self._wait_ready(name, READY_TIMEOUT, 2)

    def wipe(self, name: str) -> None:
        self._power("wipe", name)

    def down(self) -> None:
        for name in self.nodes:
            self._close_master(name)
        shutil.rmtree(self.dir, ignore_errors=True)
