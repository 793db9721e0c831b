"""Command-line variables shared by every task family (``doit <task> site=DIR out=DIR``)."""

from __future__ import annotations

import functools
import os

from doit import get_var

DEFAULT_SITE = "site"
DEFAULT_OUT = "build"


def site_dir() -> str:
    """The site directory: ``site=DIR`` on the command line, default ``site/``."""
    return os.path.normpath(get_var("site", DEFAULT_SITE))


def out_dir() -> str:
    """The output directory: ``out=DIR`` on the command line, default ``build/``."""
    return _normalized(get_var("out", DEFAULT_OUT))


@functools.lru_cache(maxsize=8)
def _normalized(path: str) -> str:
    """``os.path.normpath``, remembered: task creation asks for the output directory thousands of times."""
    return os.path.normpath(path)


def state_dir(*parts: str) -> str:
    """A path under ``<out>/state``, where intermediates live."""
    return os.path.join(out_dir(), "state", *parts)
