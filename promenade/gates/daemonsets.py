"""Stand-in for the etcd chart's anchor DaemonSet on sandbox nodes, which have no kubelet.

On a real cluster, labelling a node ``kubernetes-etcd=enabled`` schedules the etcd chart's
anchor pod there; the pod runs ``etcd_anchor.py run`` (add/promote this member, write its
static pod manifest, remove the auxiliary members) and, when the label goes at teardown,
its ``preStop`` removes the member. Here the gate does the scheduling: a node that becomes
an etcd member gets the chart's own anchor programs and manifest template, the chart values
of the rendered site (``armada/Chart/v1 kubernetes-etcd``, certificates substituted) and a
systemd unit running the same ``etcd_anchor.py run`` command line as the DaemonSet; when the
node leaves, the unit is stopped with its stop file, so ``--remove-on-stop`` runs.
Only the Service address differs: the members' addresses are given instead of its DNS name.
"""

from __future__ import annotations

import json
import os
import shlex

from promenade import charts, store
from promenade.config import GENESIS, NODE
from promenade.gates.provider import GateError, Provider

CHART = "etcd"
CHART_DOCUMENT = ("armada/Chart/v1", "kubernetes-etcd")
HOME = "/opt/promenade-gate/etcd-anchor"
UNIT = "promenade-gate-etcd-anchor.service"
STOP_FILE = "/run/promenade-gate-etcd-anchor.stop"
PERIOD = 3


def chart_values(build_dir: str) -> dict:
    """The etcd chart's values for the rendered site: chart defaults + the site's overrides."""
    doc = store.load_document(os.path.join(build_dir, "state", "rendered"), *CHART_DOCUMENT)
    return charts.merge_values(charts.default_values(CHART), doc.data.get("values") or {})


def node_ip(build_dir: str, name: str) -> str:
    """The address the site gives node ``name`` (what its kubelet reports as the pod's NODE_IP)."""
    rendered = os.path.join(build_dir, "state", "rendered")
    for doc in store.load_documents(rendered, [GENESIS, NODE]):
        if doc.data.get("hostname") == name:
            return str(doc.data["ip"])
    raise GateError(f"the rendered site has no Genesis or KubernetesNode with hostname {name}")


def anchor_command(values: dict, name: str, address: str, endpoints: list[str]) -> list[str]:
    """The DaemonSet container's ``etcd_anchor.py run`` arguments for node ``name``."""
    settings, etcd = values["anchor"], values["etcd"]
    client, peer = values["network"]["service_client"]["port"], values["network"]["service_peer"]["port"]
    argv = ["python3", f"{HOME}/files/etcd_anchor.py", "run",
            f"--endpoints={','.join(f'https://{ip}:{client}' for ip in endpoints)}",
            f"--cacert={HOME}/secrets/ca.pem", f"--cert={HOME}/secrets/anchor.pem",
            f"--key={HOME}/secrets/anchor-key.pem", f"--name={name}",
            f"--peer-url=https://{address}:{peer}", f"--client-url=https://{address}:{client}",
            f"--data-dir={etcd['host_data_path']}", f"--manifest-template={HOME}/files/{settings['manifest_template']}",
            f"--manifest-out={settings['manifest_path']}", f"--values={HOME}/secrets/values.json",
            f"--templates={HOME}/files", "--root=/", f"--var=node.name={name}", f"--var=node.ip={address}",
            f"--auxiliary-threshold={settings['auxiliary_threshold']}",
            f"--unhealthy-seconds={settings['unhealthy_seconds']}", f"--retry-seconds={settings['retry_seconds']}",
            f"--period={PERIOD}", f"--stop-file={STOP_FILE}"]
    argv += [f"--auxiliary-cleanup={path}" for path in settings.get("auxiliary_cleanup") or []]
    if settings.get("enable_cleanup"):
        argv.append("--remove-on-stop")
    if settings.get("keep_data"):
        argv.append("--keep-data")
    return argv


def schedule(provider: Provider, build_dir: str, name: str, endpoints: list[str]) -> None:
    """Start the etcd anchor on ``name`` (it stays enabled across reboots, like the pod);
    ``endpoints`` are the addresses behind the etcd Service."""
    values = chart_values(build_dir)
    for relative, source in charts.chart_sources(CHART).items():
        if relative.startswith("files/"):
            with open(source, "rb") as handle:
                provider.put(name, handle.read(), f"{HOME}/{relative}", mode=charts.file_mode(relative))
    secrets = {"ca.pem": values["secrets"]["tls"]["client"]["ca"],
               "anchor.pem": values["secrets"]["anchor"]["tls"]["cert"],
               "anchor-key.pem": values["secrets"]["anchor"]["tls"]["key"],
               "values.json": json.dumps(values, sort_keys=True)}
    for filename, text in secrets.items():
        provider.put(name, text.encode(), f"{HOME}/secrets/{filename}", mode=0o600)
    argv = anchor_command(values, name, node_ip(build_dir, name), endpoints)
    unit = ("[Unit]\nDescription=etcd chart anchor (stand-in for its DaemonSet pod; sandbox only)\n"
            f"[Service]\nExecStartPre=/bin/rm -f {STOP_FILE}\nExecStart={shlex.join(argv)}\n"
            "Restart=on-failure\nRestartSec=3\n[Install]\nWantedBy=multi-user.target\n")
    provider.put(name, unit.encode(), f"/etc/systemd/system/{UNIT}", mode=0o644)
    provider.exec(name, f"systemctl daemon-reload && systemctl enable --now {UNIT}")


def unschedule(provider: Provider, name: str) -> None:
    """Stop the anchor as a deleted pod would: stop file first, so it leaves the cluster."""
    provider.exec(name, f"touch {STOP_FILE}; for _ in $(seq 60); do systemctl is-active --quiet {UNIT} || "
                        f"break; sleep 1; done; systemctl disable --now {UNIT}", timeout=120)
