#!/usr/bin/env python3
"""Static pod runner for sandbox nodes, which cannot have a kubelet.

NOT a kubelet and not a container runtime: for every static pod manifest in
``/etc/kubernetes/manifests`` it writes one transient systemd unit per container that runs
the container's ``command`` + ``args`` with the Debian binary of the same name (etcd-server's
``etcd``, ``haproxy``), the container's ``env`` (``$(VAR)`` expanded, ``status.podIP`` and
``spec.nodeName`` resolved for ``hostNetwork`` pods) and its ``hostPath`` volumes bind-mounted
at their ``mountPath`` (systemd ``BindPaths=``). Images, probes, resources and security
contexts are ignored. The sandbox cannot raise RLIMIT_NOFILE (no CAP_SYS_RESOURCE), so units get the
node's hard limit and haproxy's connection limit is capped to fit it (``-n``, which takes
precedence over the configuration's ``maxconn``). Units live in ``/run/systemd/system``, so after a reboot they are
recreated from the manifests, as a kubelet would restart static pods.

Installed by the sandbox provider with a ``.path`` unit that re-runs it whenever the manifests
directory changes. Usage: ``static_pods.py [MANIFEST_DIR]``. Python 3 + PyYAML only.
"""

from __future__ import annotations

import os
import re
import resource
import shlex
import shutil
import socket
import subprocess
import sys

import yaml

MANIFESTS = "/etc/kubernetes/manifests"
UNIT_DIR = "/run/systemd/system"
PREFIX = "static-pod-"
VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def _node_address() -> str:
    return subprocess.run(["hostname", "-I"], capture_output=True, text=True, check=True).stdout.split()[0]


def _env(container: dict) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = VAR.sub(lambda m: env.get(m.group(1), m.group(0)), str(item["value"]))
            continue
        field = ((item.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
        if field in ("status.podIP", "status.hostIP"):
            env[item["name"]] = _node_address()
        elif field == "spec.nodeName":
            env[item["name"]] = socket.gethostname()
    return env


def _binds(pod: dict, container: dict) -> list[str]:
    volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
    binds = []
    for mount in container.get("volumeMounts") or []:
        host_path = (volumes.get(mount["name"]) or {}).get("hostPath", {}).get("path")
        if host_path and host_path != mount["mountPath"]:
            option = "BindReadOnlyPaths" if mount.get("readOnly") else "BindPaths"
            binds.append(f"{option}=-{host_path}:{mount['mountPath']}")
    return binds


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def unit_for(pod: dict, container: dict) -> str | None:
    """The systemd unit text that runs one container of a static pod, or None when its
    program is not installed on this node (kube-apiserver and friends never are)."""
    env = _env(container)
    argv = [VAR.sub(lambda m: env.get(m.group(1), m.group(0)), str(a))
            for a in (container.get("command") or []) + (container.get("args") or [])]
    if not argv:
        raise ValueError(f"container {container['name']} has no command")
    program = shutil.which(os.path.basename(argv[0]))
    if program is None:
        return None
    argv[0] = program
    files = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if os.path.basename(program) == "haproxy":
        argv[1:1] = ["-n", str(files // 2 - 300)]
    lines = ["[Unit]", f"Description=static pod {pod['metadata']['name']} container {container['name']}",
             "[Service]", f"ExecStart={shlex.join(argv)}", "Restart=always", "RestartSec=2",
             f"LimitNOFILE={files}"]
    lines += [f"Environment={shlex.quote(f'{k}={v}')}" for k, v in sorted(env.items())]
    lines += _binds(pod, container)
    if container.get("workingDir"):
        lines.append(f"WorkingDirectory={container['workingDir']}")
    return "\n".join(lines) + "\n"


def desired_units(manifest_dir: str) -> dict[str, str]:
    """Unit name -> text for every runnable container of every manifest in ``manifest_dir``."""
    units = {}
    for entry in sorted(os.listdir(manifest_dir)) if os.path.isdir(manifest_dir) else []:
        if not entry.endswith((".yaml", ".yml", ".json")):
            continue
        with open(os.path.join(manifest_dir, entry), encoding="utf-8") as handle:
            pod = yaml.safe_load(handle)
        if not isinstance(pod, dict) or pod.get("kind") != "Pod":
            continue
        for container in pod["spec"].get("containers") or []:
            unit = unit_for(pod, container)
            if unit is None:
                print(f"static pods: {entry}: {container['name']} not runnable here "
                      f"({(container.get('command') or ['?'])[0]} is not installed)", file=sys.stderr)
                continue
            units[f"{PREFIX}{pod['metadata']['name']}-{container['name']}.service"] = unit
    return units


def sync(manifest_dir: str = MANIFESTS) -> None:
    """Make the running units match the manifests: start new, restart changed, stop removed."""
    wanted = desired_units(manifest_dir)
    existing = {name for name in os.listdir(UNIT_DIR) if name.startswith(PREFIX)} if os.path.isdir(UNIT_DIR) else set()
    changed = []
    for name, text in wanted.items():
        path = os.path.join(UNIT_DIR, name)
        if not os.path.exists(path) or _read(path) != text:
            os.makedirs(UNIT_DIR, exist_ok=True)
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(text)
            changed.append(name)
    removed = sorted(existing - set(wanted))
    if removed:
        subprocess.run(["systemctl", "stop", *removed], check=False)
        for name in removed:
            os.unlink(os.path.join(UNIT_DIR, name))
    subprocess.run(["systemctl", "daemon-reload"], check=True)
    if changed:
        subprocess.run(["systemctl", "--no-block", "restart", *changed], check=False)
    if wanted:
        subprocess.run(["systemctl", "--no-block", "start", *sorted(wanted)], check=False)
    for name in changed + removed:
        print(f"static pods: {'removed' if name in removed else 'started'} {name}", file=sys.stderr)


if __name__ == "__main__":
    sync(sys.argv[1] if len(sys.argv) > 1 else MANIFESTS)
