"""Files the scripts place on a node: present, with the expected mode and owner."""

import pytest


def test_expected_files_are_placed(host, node):
    if not node["files"]:
        pytest.skip(f"the scenario lists no files for role {node['role']}")
    wrong = []
    for spec in node["files"]:
        placed = host.file(spec["path"])
        if not placed.exists:
            wrong.append(f"{spec['path']}: missing")
            continue
        mode = f"{placed.mode:04o}"
        if mode != spec["mode"] or placed.user != spec["owner"]:
            wrong.append(f"{spec['path']}: {mode} {placed.user}, expected {spec['mode']} {spec['owner']}")
    assert not wrong, "\n".join(wrong)


def test_no_private_key_is_readable_by_others(host):
    found = host.run("find /etc/kubernetes /etc/genesis /etc/etcd -name '*key*' -perm /077 2>/dev/null")
    assert found.stdout.strip() == ""
