"""Per-invocation set-up: the output directory (0700, a lock), SIGTERM that keeps progress, and
a quick exit.

doit writes its state only at the end of a run; turning SIGTERM into KeyboardInterrupt makes a
terminated build save what it finished. The lock stops two runs from interleaving their writes
into the same output directory. A doit run is one short-lived process: the objects of the loaded
modules are frozen once loaded, and everything is frozen at exit, so that garbage collections
(the interpreter's final one included) do not walk them again and again; the operating system
reclaims the memory anyway.
"""

from __future__ import annotations

import atexit
import fcntl
import gc
import os
import signal
import sys

from ..fileio import DIR_MODE, ensure_dir

_held = []


def _interrupt(_signum, _frame):
    raise KeyboardInterrupt


def prepare(out: str) -> None:
    """Create ``out`` (0700), lock it for this process, and map SIGTERM to KeyboardInterrupt."""
    ensure_dir(out, DIR_MODE)
    os.chmod(out, DIR_MODE)
    handle = open(os.path.join(out, ".lock"), "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sys.exit(f"promenade: another doit run is using {out}/ (lock {out}/.lock); wait for it to finish")
    _held.append(handle)
    signal.signal(signal.SIGTERM, _interrupt)
    gc.freeze()
    atexit.register(gc.freeze)
