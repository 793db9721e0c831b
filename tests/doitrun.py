"""Run the project's doit tasks in a subprocess, as an operator would."""

from __future__ import annotations

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOIT = [sys.executable, "-m", "doit", "-f", os.path.join(ROOT, "dodo.py")]


def doit(*args, site=None, out=None, env=None, check=True):
    """Run ``doit ARGS site=SITE out=OUT``; return the CompletedProcess (text)."""
    argv = DOIT + list(args)
    if site is not None:
        argv.append(f"site={site}")
    if out is not None:
        argv.append(f"out={out}")
    full_env = dict(os.environ, **(env or {}))
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env=full_env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"doit {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def executed(proc) -> list[str]:
    """Names of tasks that doit's console reporter says it executed (``.  name``)."""
    return re.findall(r"^\.  (\S+)", proc.stdout, flags=re.M)
