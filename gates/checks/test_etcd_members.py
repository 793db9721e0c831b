"""etcd membership seen from this member is exactly the stage's expectation, all started."""

import json
import time

ATTEMPTS = 30


def test_member_list_is_exactly_the_expected_set(host, gate, etcdctl):
    expected = sorted(gate["etcd_members"])
    seen = None
    for _ in range(ATTEMPTS):  # membership converges within seconds after a change
        result = host.run(etcdctl("member list -w json"))
        if result.rc == 0:
            members = json.loads(result.stdout).get("members", [])
            seen = sorted(m.get("name", "") for m in members)
            if seen == expected:
                return
        time.sleep(2)
    assert seen == expected
