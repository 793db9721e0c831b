"""etcd and haproxy run on the node from the generated static pod manifests, with TLS."""

import time

import pytest

LISTEN_ATTEMPTS = 30


def test_etcd_serves_tls_clients(host, node, etcdctl):
    if node["role"] not in ("genesis", "master"):
        pytest.skip("not an etcd member")
    for _ in range(LISTEN_ATTEMPTS):  # the static pod runner starts etcd right after the script
        if host.socket("tcp://0.0.0.0:2379").is_listening and host.socket("tcp://0.0.0.0:2380").is_listening:
            break
        time.sleep(1)
    assert host.socket("tcp://0.0.0.0:2379").is_listening
    assert host.socket("tcp://0.0.0.0:2380").is_listening
    health = host.run(etcdctl("endpoint health"))
    assert health.rc == 0, health.stderr
    plain = host.run("curl -s --max-time 5 http://127.0.0.1:2379/health")
    assert plain.rc != 0 or "true" not in plain.stdout  # no plaintext client port


def test_haproxy_runs_from_its_manifest(host):
    assert host.file("/etc/kubernetes/manifests/haproxy.yaml").exists
    assert host.process.filter(comm="haproxy")
