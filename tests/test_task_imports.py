"""Loading the task families stays light: heavy libraries load only in the actions that use them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from doitrun import ROOT

from promenade.gates import scenario
from promenade.tasks import gate

HEAVY = ("jinja2", "jsonschema", "promenade.engine", "promenade.rendering", "promenade.validation",
         "promenade.trees", "promenade.gates.scenario", "promenade.gates.sandbox", "starlette", "uvicorn", "httpx")
PROBE = """
import json, runpy, sys
from doit.doit_cmd import reset_vars
reset_vars()  # as `doit` does before loading dodo.py
runpy.run_path(sys.argv[1])
print(json.dumps(sorted(sys.modules)))
"""


def test_loading_dodo_imports_no_heavy_module(tmp_path):
    proc = subprocess.run([sys.executable, "-c", PROBE, os.path.join(ROOT, "dodo.py")], cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True, timeout=60,
                          check=True)
    loaded = set(json.loads(proc.stdout))
    assert "promenade.tasks.build" in loaded and "promenade.tasks.gate" in loaded
    assert not loaded.intersection(HEAVY)


def test_gate_tasks_list_the_scenarios_of_the_gate_runner():
    assert gate.scenario_names() == scenario.scenario_names() != []
