"""Atomic, change-aware file output.

Every output goes through :func:`atomic_write`: the bytes are written to a temporary file
in the same directory and renamed into place, so a killed build never leaves a half-written
file where the server could hand it out. Files whose content is unchanged are not touched,
which keeps doit's md5 early cutoff and the file mtimes stable.

There is deliberately no fsync: the rename already guarantees that a killed build leaves
either the old or the new file, and an fsync per file cost 4-6 ms (thousands of files in a
large build). After a power loss, rebuild: the outputs are deterministic.
"""

from __future__ import annotations

import os
import tempfile

SECRET_MODE = 0o600
PUBLIC_MODE = 0o644
DIR_MODE = 0o700


def ensure_dir(path: str, mode: int = DIR_MODE) -> None:
    """Create ``path`` (and parents) with ``mode`` if it does not exist."""
    os.makedirs(path, mode=mode, exist_ok=True)


def atomic_write(path: str, data: bytes | str, mode: int = PUBLIC_MODE) -> bool:
    """Write ``data`` to ``path`` atomically; return False if the file already held it."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    try:
        with open(path, "rb") as handle:
            if handle.read() == data:
                if os.stat(path).st_mode & 0o777 != mode:
                    os.chmod(path, mode)
                return False
    except FileNotFoundError:
        pass
    directory = os.path.dirname(path) or "."
    ensure_dir(directory)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix="-" + os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return True


def remove_quietly(path: str) -> bool:
    """Delete ``path`` if it exists; return whether something was removed."""
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
