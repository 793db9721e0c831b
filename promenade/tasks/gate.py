"""Task family ``gate``: ``doit gate:<scenario>`` runs one scenario of ``gates/``;
``doit gate:clean`` removes what killed runs left behind and node images of other package
lists. ``doit gate`` alone runs every scenario, then ``clean``.

Variables: ``provider=sandbox|ssh`` (default sandbox), ``hosts=FILE`` (the ssh provider's hosts
file), ``out=DIR`` (reports go to ``<out>/gates/<scenario>/``).
"""

from __future__ import annotations

import os

from doit import get_var
from doit.exceptions import TaskFailed

from .options import out_dir
from .reporting import user_errors
from .session import collect_garbage

SCENARIOS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "gates")


@user_errors
def _gate(name: str, out: str, provider: str, hosts: str | None):
    from ..gates.provider import GateError
    from ..gates.scenario import run_gate

    collect_garbage()
    try:
        report = run_gate(name, out, provider, hosts)
    except GateError as exc:
        return TaskFailed(str(exc), report=False)
    if not report.ok:
        return TaskFailed(f"gate {name} failed; reports in {report.dir}", report=False)
    return None


def _clean() -> None:
    from ..gates import image, sandbox

    removed = sandbox.clean_all() + [f"image {key}" for key in image.prune_images()]
    print("\n".join(removed) if removed else "nothing to clean")


def scenario_names() -> list[str]:
    """``gates/<name>.yaml`` names, listed without importing :mod:`promenade.gates.scenario`
    (jsonschema and the providers), which only a gate run needs."""
    return sorted(entry[:-5] for entry in os.listdir(SCENARIOS_DIR) if entry.endswith(".yaml"))


def gate_tasks():
    """``gate:<scenario>`` and ``gate:clean``."""
    provider = get_var("provider", "sandbox")
    hosts = get_var("hosts", None)
    for name in scenario_names():
        yield {"name": name, "doc": f"run the {name} gate scenario",
               "actions": [(_gate, [name, out_dir(), provider, hosts])],
               "uptodate": [False], "verbosity": 2}
    yield {"name": "clean", "doc": "remove leftovers of gate runs that died, and outdated node images",
           "actions": [_clean], "uptodate": [False], "verbosity": 2}
