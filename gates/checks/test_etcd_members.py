"""etcd membership seen from this member: exactly the stage's expectation, every member
started, and each member's peer URL the address of the node it is named after."""

import json
import time

ATTEMPTS = 30


def _peer_problems(members, gate):
    addresses = {name: spec["address"] for name, spec in gate["all_nodes"].items()}
    problems = []
    for member in members:
        name, urls = member.get("name", ""), member.get("peerURLs", [])
        node = name.split("auxiliary-")[0] or None  # auxiliary members live on the genesis address
        if node in addresses and urls != [f"https://{addresses[node]}:2380"]:
            problems.append(f"member {name}: peer URLs {urls}, expected https://{addresses[node]}:2380")
        if not any(f"https://{ip}:" in url for url in urls for ip in addresses.values()):
            problems.append(f"member {name or '(unstarted)'}: peer URLs {urls} name no node address")
    return problems


def test_member_list_is_exactly_the_expected_set(host, gate, etcdctl):
    expected = sorted(gate["etcd_members"])
    seen = None
    for _ in range(ATTEMPTS):  # membership converges within seconds after a change
        result = host.run(etcdctl("member list -w json"))
        if result.rc == 0:
            members = json.loads(result.stdout).get("members", [])
            problems = _peer_problems(members, gate)
            assert not problems, "\n".join(problems)
            seen = sorted(m.get("name", "") for m in members)
            if seen == expected:
                return
        time.sleep(2)
    assert seen == expected
