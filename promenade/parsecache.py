"""Parsed site files kept as JSON under the build state, so that an unchanged file is parsed once.

Parsing YAML dominates a small change to a large site: a thousand nodes and their
``certificates.yaml`` take libyaml about half a second, their JSON form a tenth of that. For each
input file, ``<cache>/<digest of its path>.jsonl`` holds a header (the path, the sha256 of the
file's bytes and each document's first line) and then one line per document, in the file's key
order. An entry is used only when the file's bytes still hash to its digest.

Documents read from the cache carry no YAML nodes: when an error message needs the line of a path
inside one of them, the file is parsed again, once. Entries hold whatever the files hold
(``certificates.yaml``: private keys), so they are written 0600.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os

from .documents import Document, parse_bytes, read_bytes
from .errors import PromenadeError
from .fileio import SECRET_MODE, atomic_write, remove_quietly
from .store import encode, load_line

FORMAT = 1
SUFFIX = ".jsonl"


@functools.lru_cache(maxsize=4)
def _parsed_again(path: str, digest: str) -> list[Document]:
    """The documents of ``path`` with their YAML nodes, if it still holds the bytes of ``digest``."""
    try:
        data = read_bytes(path)
    except PromenadeError:  # gone since: only the document's first line is known
        return []
    return parse_bytes(data, path) if hashlib.sha256(data).hexdigest() == digest else []


def _node(path: str, digest: str, index: int):
    docs = _parsed_again(path, digest)
    return docs[index].node if index < len(docs) else None


class ParseCache:
    """The cache in ``directory``; :meth:`read` is a drop-in ``read`` for :func:`documents.load_files`."""

    def __init__(self, directory: str):
        self.directory = directory
        self._memory: dict[tuple[str, str], list[Document]] = {}  # (path, digest) -> documents

    def entry(self, path: str) -> str:
        """The cache file of the input file ``path``."""
        name = hashlib.sha256(os.path.abspath(path).encode("utf-8")).hexdigest()[:32]
        return os.path.join(self.directory, name + SUFFIX)

    def read(self, path: str) -> list[Document]:
        """The documents of ``path``: from memory, from its cache entry, or parsed (and cached)."""
        data = read_bytes(path)
        digest = hashlib.sha256(data).hexdigest()
        docs = self._memory.get((path, digest))
        if docs is None:
            docs = self._load(path, digest)
        if docs is None:
            docs = parse_bytes(data, path)
            self._store(path, digest, docs)
        self._memory[(path, digest)] = docs
        return docs

    def prune(self, paths: list[str]) -> None:
        """Remove the entries of files other than ``paths`` (files that left the site)."""
        wanted = {os.path.basename(self.entry(path)) for path in paths}
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return
        for name in names:
            if name.endswith(SUFFIX) and name not in wanted:
                remove_quietly(os.path.join(self.directory, name))

    def _load(self, path: str, digest: str) -> list[Document] | None:
        try:
            with open(self.entry(path), encoding="utf-8") as handle:
                header = json.loads(handle.readline())
                if header != {**header, "format": FORMAT, "path": os.path.abspath(path), "sha256": digest}:
                    return None
                raws = [load_line(line) for line in handle]
        except (OSError, ValueError):
            return None
        lines = header.get("lines")
        if not isinstance(lines, list) or len(lines) != len(raws):
            return None
        return [Document(raw, path, line, functools.partial(_node, path, digest, index))
                for index, (raw, line) in enumerate(zip(raws, lines))]

    def _store(self, path: str, digest: str, docs: list[Document]) -> None:
        header = {"format": FORMAT, "path": os.path.abspath(path), "sha256": digest,
                  "lines": [doc.line for doc in docs]}
        body = [json.dumps(header, sort_keys=True)] + [encode(doc.raw, sort_keys=False)[0] for doc in docs]
        atomic_write(self.entry(path), "".join(line + "\n" for line in body), SECRET_MODE)
