"""Baseline of every gate node: booted systemd, right hostname, reachable sshd."""


def test_hostname_is_the_node_name(host, node):
    assert host.check_output("hostname") == node["name"]


def test_systemd_is_init_and_booted(host):
    assert host.file("/proc/1/comm").content_string.strip() == "systemd"
    state = host.run("systemctl is-system-running").stdout.strip()
    assert state in ("running", "degraded"), state


def test_address_is_configured(host, node):
    assert f"inet {node['address']}/" in host.check_output("ip -4 -o addr show")


def test_sshd_listens(host):
    assert host.socket("tcp://0.0.0.0:22").is_listening or host.socket("tcp://:::22").is_listening
