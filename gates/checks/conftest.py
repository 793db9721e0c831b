"""Shared fixtures of the gate checks (testinfra modules run over ssh against gate nodes).

The gate runner describes what a stage expects in a JSON file named by
``PROMENADE_GATE_CONTEXT``: nodes (address, role), the build directory, the expected etcd
membership and whether Kubernetes binaries exist on the nodes. Checks marked ``kubernetes``
need kubelet/kube-apiserver and are skipped where the context says they cannot exist.
"""

from __future__ import annotations

import json
import os

import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "kubernetes: needs kubelet/kube-apiserver on the node")


@pytest.fixture(scope="session")
def gate():
    """The stage's expectations (see the module docstring)."""
    with open(os.environ["PROMENADE_GATE_CONTEXT"], encoding="utf-8") as handle:
        return json.load(handle)


@pytest.fixture()
def node(host, gate):
    """The expectations for the node ``host`` is connected to."""
    name = host.backend.get_hostname()
    return {"name": name, **gate["nodes"][name]}


@pytest.fixture()
def etcdctl(gate):
    """``etcdctl(args)`` -> a shell command using the node's generated etcd client certificate."""
    e = gate["etcdctl"]

    def command(args: str) -> str:
        return (f"ETCDCTL_API=3 etcdctl --command-timeout=10s --endpoints={e['endpoint']} "
                f"--cacert={e['cacert']} --cert={e['cert']} --key={e['key']} {args}")

    return command


@pytest.fixture(autouse=True)
def _kubernetes_only(request, gate):
    if request.node.get_closest_marker("kubernetes") and not gate.get("kubernetes"):
        pytest.skip("needs kubelet/kube-apiserver, which cannot be installed on sandbox nodes "
                    "(runs with the ssh provider on real machines)")
