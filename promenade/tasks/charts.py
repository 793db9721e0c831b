"""Task family: the assembled Helm charts (``doit charts``).

* ``charts``: writes every chart of ``charts/`` to ``<out>/charts/<chart>/`` with the anchor
  programs of ``promenade/anchor/`` under ``files/`` and the ``anchor-lib`` library under
  ``charts/``: complete charts for ``helm lint`` / ``helm template`` and for the genesis
  payload (``/etc/genesis/armada/assets/charts``). Files are rewritten only when they change.
"""

from __future__ import annotations

import os

from .options import out_dir


def charts_out() -> str:
    """Where the assembled charts go."""
    return os.path.join(out_dir(), "charts")


def _charts():
    """:mod:`promenade.charts`, imported when this family is selected (it loads PyYAML)."""
    from .. import charts

    return charts


def _assemble(destination: str) -> None:
    _charts().bundle(destination)


def charts_task() -> dict:
    """``charts``."""
    layout = {os.path.join(charts_out(), relative): source for relative, source in _charts().assembled_sources().items()}
    return {
        "actions": [(_assemble, [charts_out()])],
        "file_dep": sorted(set(layout.values())),
        "targets": sorted(layout),
        "clean": True,
    }
