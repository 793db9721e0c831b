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
from typing import Sequence

SECRET_MODE = 0o600
PUBLIC_MODE = 0o644
DIR_MODE = 0o700


def ensure_dir(path: str, mode: int = DIR_MODE) -> None:
    """Create ``path`` (and parents) with ``mode`` if it does not exist."""
    os.makedirs(path, mode=mode, exist_ok=True)


def _chunks(data: bytes | str | Sequence[bytes]) -> list[bytes]:
    if isinstance(data, str):
        return [data.encode("utf-8")]
    if isinstance(data, (bytes, bytearray, memoryview)):
        return [data]
    return list(data)


def _holds(path: str, chunks: list[bytes]) -> bool:
    """Whether ``path`` already holds exactly the concatenation of ``chunks``."""
    try:
        with open(path, "rb") as handle:
            if os.fstat(handle.fileno()).st_size != sum(map(len, chunks)):
                return False
            return all(handle.read(len(chunk)) == chunk for chunk in chunks)
    except FileNotFoundError:
        return False


def atomic_write(path: str, data: bytes | str | Sequence[bytes], mode: int = PUBLIC_MODE) -> bool:
    """Write ``data`` to ``path`` atomically; return False if the file already held it.

    ``data`` may be a sequence of byte strings, written one after the other: a script that embeds
    a 100 MB shared payload is never assembled in memory.
    """
    chunks = _chunks(data)
    if _holds(path, chunks):
        if os.stat(path).st_mode & 0o777 != mode:
            os.chmod(path, mode)
        return False
    directory = os.path.dirname(path) or "."
    ensure_dir(directory)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix="-" + os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return True


def atomic_link(source: str, path: str) -> bool:
    """Make ``path`` a hard link to ``source`` (same content, no second copy on disk), replacing
    any old ``path`` by a rename; return False if it already was one."""
    try:
        if os.path.samefile(source, path):
            return False
    except FileNotFoundError:
        pass
    tmp = os.path.join(os.path.dirname(path) or ".", f".tmp-{os.getpid()}-{os.path.basename(path)}")
    remove_quietly(tmp)
    os.link(source, tmp)
    os.replace(tmp, path)
    return True


def remove_quietly(path: str) -> bool:
    """Delete ``path`` if it exists; return whether something was removed."""
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
