"""systemd units the scripts set up are enabled and running."""

import pytest


def test_units_enabled_and_active(host, node):
    if not node["units"]:
        pytest.skip(f"the scenario lists no units for role {node['role']}")
    wrong = [unit for unit in node["units"]
             if not (host.service(unit).is_enabled and host.service(unit).is_running)]
    assert not wrong, f"not enabled and active: {', '.join(wrong)}"
