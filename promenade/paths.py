"""Deckhand-style JSONPath subset: parse, read, write and delete inside document data.

Supported syntax: ``.`` or ``$`` (the whole data), ``.a.b``, ``$.a.b``, ``.a[0].b``,
``.a[0][1]``, quoted keys ``.'x:y'.z`` / ``."x.y"`` and bracketed keys ``['x']``. A path
parses into a tuple of parts: strings are mapping keys, ints are list indices.
"""

from __future__ import annotations

import copy
import re
from functools import lru_cache
from typing import Any

from .documents import format_path

MISSING = object()
"""Returned by :func:`get_path` when the path does not exist."""

_TOKEN = re.compile(
    r"""\.(?:'(?P<sq>[^']*)'|"(?P<dq>[^"]*)"|(?P<bare>[^.\[\]'"]+))"""
    r"""|\[(?:(?P<index>\d+)|'(?P<bsq>[^']*)'|"(?P<bdq>[^"]*)")\]"""
)


class PathError(ValueError):
    """A path that cannot be parsed, or data that cannot be walked along it."""


@lru_cache(maxsize=4096)
def parse_path(path: str) -> tuple:
    """``".a[0].'b:c'"`` -> ``("a", 0, "b:c")``; ``"."`` and ``"$"`` -> ``()``."""
    if not isinstance(path, str):
        raise PathError(f"path must be a string, not {type(path).__name__}")
    text = path.strip()
    if not text:
        raise PathError("path is empty")
    if text.startswith("$"):
        text = text[1:]
    if text in ("", "."):
        return ()
    if not text.startswith((".", "[")):
        raise PathError(f"path {path!r} must start with '.' or '$'")
    parts: list = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise PathError(f"cannot parse path {path!r} at {text[pos:]!r}")
        groups = match.groupdict()
        if groups["index"] is not None:
            parts.append(int(groups["index"]))
        else:
            parts.append(next(v for k, v in groups.items() if k != "index" and v is not None))
        pos = match.end()
    return tuple(parts)


def get_path(data: Any, parts) -> Any:
    """The value at ``parts`` inside ``data``, or :data:`MISSING`."""
    for part in parts:
        if isinstance(part, int):
            if not isinstance(data, list) or part >= len(data):
                return MISSING
        elif not isinstance(data, dict) or part not in data:
            return MISSING
        data = data[part]
    return data


def set_path(data: Any, parts, value: Any) -> Any:
    """Set ``parts`` inside ``data`` to ``value`` and return the (possibly new) root.

    Missing (or null) intermediate keys become ``{}``, or ``[]`` when an index follows;
    lists are padded with ``{}`` up to an index. The empty path replaces the whole data.
    """
    if not parts:
        return value
    if data is None:
        data = [] if isinstance(parts[0], int) else {}
    node = data
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        _check_container(node, part, parts[:depth])
        if isinstance(part, int):
            while len(node) <= part:
                node.append({})
        if last:
            node[part] = value
            break
        child = node.get(part) if isinstance(node, dict) else node[part]
        if child is None:
            child = [] if isinstance(parts[depth + 1], int) else {}
            node[part] = child
        node = child
    return data


def delete_path(data: Any, parts) -> Any:
    """Remove ``parts`` from ``data`` and return the root (``{}`` for the empty path).

    Raises :class:`PathError` when the path does not exist.
    """
    if not parts:
        return {}
    parent = get_path(data, parts[:-1])
    if parent is MISSING or get_path(parent, parts[-1:]) is MISSING:
        raise PathError(f"{format_path(parts)} does not exist")
    del parent[parts[-1]]
    return data


def _check_container(node: Any, part, walked) -> None:
    if isinstance(part, int) and not isinstance(node, list):
        raise PathError(f"cannot index {format_path(walked)}: it is a {type(node).__name__}, not a list")
    if isinstance(part, str) and not isinstance(node, dict):
        raise PathError(f"cannot set key {part!r} in {format_path(walked)}: "
                        f"it is a {type(node).__name__}, not a mapping")


def clone(value: Any) -> Any:
    """Deep copy of YAML data; several times faster than :func:`copy.deepcopy` for it."""
    if isinstance(value, dict):
        return {key: clone(item) for key, item in value.items()}
    if isinstance(value, list):
        return [clone(item) for item in value]
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    return copy.deepcopy(value)
