"""Checks that need kubelet and an apiserver (real machines only; skipped in the sandbox)."""

import pytest

pytestmark = pytest.mark.kubernetes


def test_kubelet_is_active(host):
    assert host.service("kubelet").is_running
    assert host.service("kubelet").is_enabled


def test_node_is_ready(host, node):
    out = host.check_output(f"kubectl --kubeconfig /etc/kubernetes/admin/kubeconfig.yaml get node {node['name']} "
                            "-o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}'")
    assert out == "True"
