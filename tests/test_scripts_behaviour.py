"""What the generated genesis and join scripts do before their phases: the hostname check comes
first, before the "finished run" short-circuit and whatever phases are skipped.

Each run is in private mount and UTS namespaces (``unshare``) with its own hostname and tmpfs
on /var/lib, /usr/local/bin and /etc/kubernetes, so the host is not touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from promenade.engine import render_genesis_script, render_join_script
from sitefixtures import embedded_site

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                                reason="needs root and unshare for private namespaces")

MARKER = "/var/lib/prom.done"
WRONG_HOST = "is for host"


@pytest.fixture(scope="module")
def scripts(tmp_path_factory):
    """join-n1.sh and genesis.sh of the embedded site."""
    folder = tmp_path_factory.mktemp("scripts")
    documents = embedded_site()
    for name, script in (("join-n1.sh", render_join_script(documents, "n1")),
                         ("genesis.sh", render_genesis_script(documents))):
        (folder / name).write_bytes(script)
    return folder


def run_as(host: str, script, args: str = "", finished: bool = False) -> subprocess.CompletedProcess:
    """Run ``script ARGS`` on a host called ``host``, with a recorded finished run if ``finished``."""
    shell = (f"set -e; hostname {host}; for d in /var/lib /usr/local/bin /etc/kubernetes; do "
             "[ ! -d $d ] || mount -t tmpfs none $d; done; "
             + (f"echo 'join-n1.sh 2026-11-24T00:00:00Z' >{MARKER}; " if finished else "")
             + f"set +e; bash {script} {args}; echo rc=$?")
    proc = subprocess.run(["unshare", "--mount", "--uts", "--propagation", "private", "sh", "-c", shell],
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.rstrip().splitlines()[-1].startswith("rc="), proc.stderr
    return proc


def exit_status(proc) -> int:
    return int(proc.stdout.rstrip().splitlines()[-1][3:])


@pytest.mark.parametrize("script, right, wrong", [("join-n1.sh", "n1", "n2"), ("genesis.sh", "n0", "n1")])
def test_finished_run_on_the_wrong_host_is_refused(scripts, script, right, wrong):
    refused = run_as(wrong, scripts / script, finished=True)
    assert exit_status(refused) == 1
    assert f"this script is for host {right}, but this host is called {wrong}" in refused.stderr
    assert "nothing to do" not in refused.stderr and "=== phase" not in refused.stderr
    done = run_as(right, scripts / script, finished=True)
    assert exit_status(done) == 0 and "records a finished run" in done.stderr and WRONG_HOST not in done.stderr


def test_skipping_every_phase_still_checks_the_hostname(scripts):
    phases = subprocess.run(["bash", str(scripts / "join-n1.sh"), "--list-phases"], capture_output=True,
                            text=True, check=True).stdout.split()
    assert phases[0] == "validate-host"
    skip = "--skip-phases " + ",".join(phases)
    refused = run_as("n2", scripts / "join-n1.sh", skip)
    assert exit_status(refused) == 1 and WRONG_HOST in refused.stderr and "=== phase" not in refused.stderr
    allowed = run_as("n1", scripts / "join-n1.sh", skip)
    assert exit_status(allowed) == 0 and WRONG_HOST not in allowed.stderr
    assert all(f"=== phase {phase}: skipped" in allowed.stderr for phase in phases)


def test_help_and_phase_list_work_on_any_host(scripts):
    listed = run_as("elsewhere", scripts / "join-n1.sh", "--list-phases", finished=True)
    assert exit_status(listed) == 0 and "validate-host" in listed.stdout and WRONG_HOST not in listed.stderr
