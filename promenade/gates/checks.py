"""Run testinfra check modules (``gates/checks/*.py``) against nodes over ssh.

The same modules run against sandbox nodes and real machines: both are reached with
testinfra's ``ssh://`` backend and the provider's ssh_config. Results come back from the
JUnit XML pytest writes, so the gate report can list exercised and skipped checks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

CHECKS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                          "gates", "checks")
TIMEOUT = 600


@dataclass
class CheckResult:
    """Outcome of one check module run: passed, failed and skipped test ids (skips with reasons)."""

    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    output: str = ""

    @property
    def ok(self) -> bool:
        return not self.failed


def _parse_junit(path: str) -> CheckResult:
    result = CheckResult()
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        skipped = case.find("skipped")
        if skipped is not None:
            result.skipped[name] = skipped.get("message", "")
        elif case.find("failure") is not None or case.find("error") is not None:
            result.failed.append(name)
        else:
            result.passed.append(name)
    return result


def run_checks(modules: list[str], hosts: list[str], ssh_config: str, context: dict,
               junit_path: str) -> CheckResult:
    """Run ``modules`` (names in ``gates/checks``) on testinfra ``hosts`` with ``context``."""
    os.makedirs(os.path.dirname(junit_path), exist_ok=True)
    context_path = junit_path[:-len(".xml")] + ".context.json"
    with open(context_path, "w", encoding="utf-8") as handle:
        json.dump(context, handle, indent=2, sort_keys=True)
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", CHECKS_DIR,
            f"--ssh-config={ssh_config}", f"--hosts={','.join(hosts)}", f"--junitxml={junit_path}",
            "-o", "junit_family=xunit2", "-rs"]
    argv += [os.path.join(CHECKS_DIR, f"{module}.py") for module in modules]
    env = dict(os.environ, PROMENADE_GATE_CONTEXT=context_path)
    env.pop("PYTEST_ADDOPTS", None)
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=CHECKS_DIR, timeout=TIMEOUT)
    if not os.path.exists(junit_path):
        return CheckResult(failed=[f"pytest exited {proc.returncode}"], output=proc.stdout + proc.stderr)
    result = _parse_junit(junit_path)
    result.output = proc.stdout + proc.stderr
    if proc.returncode not in (0, 5) and not result.failed:
        result.failed.append(f"pytest exited {proc.returncode}")
    return result
