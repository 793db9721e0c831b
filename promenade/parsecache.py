"""Parsed site files kept as JSON under the build state, so that unchanged YAML is parsed once.

Parsing YAML dominates a small change to a large site: a thousand nodes and their
``certificates.yaml`` take libyaml about half a second, their JSON form a tenth of that. For each
input file, ``<cache>/<digest of its path>.jsonl`` holds a header (the path, the sha256 of the
file's bytes and, for each document, the digest of its text and its first line) and then one
line per document, in the file's key order.

A file whose bytes hash to the recorded digest is read back whole. A changed file is split at its
``---`` document markers, and only the documents whose text changed are parsed: one node edited
in a file of a thousand costs one document (each document of a stream stands alone in YAML; a
file with directives or ``...`` end markers is always parsed whole). Documents read from the
cache carry no YAML nodes: when an error message needs the line of a path inside one of them,
the file is parsed again, once. Entries hold whatever the files hold (``certificates.yaml``:
private keys), so they are written 0600.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import json
import os
import re

from .documents import Document, decode, parse_bytes, parse_stream, read_bytes
from .errors import PromenadeError
from .fileio import SECRET_MODE, atomic_write, remove_quietly
from .store import encode, load_line

FORMAT = 2
SUFFIX = ".jsonl"
_MARKER = re.compile(r"^---(?=[ \t\r\n]|$)", re.MULTILINE)  # a document start marker
_WHOLE = re.compile(r"^(%|\.\.\.(?=[ \t\r\n]|$))", re.MULTILINE)  # directives, end markers
REPARSE_SHARE = 4  # parse the whole file when more than 1/4 of its documents changed


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


def _chunks(text: str) -> list[tuple[int, str]]:
    """(first line, text) of each document's part of ``text``, split at ``---`` markers."""
    if _WHOLE.search(text):
        return [(1, text)]
    starts = [0] + [m.start() for m in _MARKER.finditer(text) if m.start() > 0]
    chunks, line = [], 1
    for begin, end in zip(starts, starts[1:] + [len(text)]):
        chunks.append((line, text[begin:end]))
        line += text.count("\n", begin, end)
    return chunks


def _digest(chunk: str) -> str:
    return hashlib.sha1(chunk.encode("utf-8")).hexdigest()


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
            old = self._load(path)
            if old is not None and old[0] == digest:
                docs = self._documents(path, digest, old[1])
            else:
                records = self._parse(path, data, old[1] if old is not None else [])
                self._store(path, digest, records)
                docs = self._documents(path, digest, records)
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

    # A record is (chunk digest, offset of the document's first line in its chunk, line, raw); each
    # chunk holds at most one document (a file parsed whole is one chunk).
    def _parse(self, path: str, data: bytes, old: list[tuple]) -> list[tuple]:
        """Records of the documents of ``data``, reusing ``old`` records of unchanged chunks."""
        text = decode(data, path)
        chunks = [(line, chunk, _digest(chunk)) for line, chunk in _chunks(text)]
        known: dict[str, tuple] = {}  # chunk digest -> the record of its document
        for record in old:
            known.setdefault(record[0], record)
        fresh = [c for c in chunks if c[2] not in known]
        if len(chunks) == 1 or not known or len(fresh) * REPARSE_SHARE > len(chunks):
            return self._whole(path, text, chunks)
        records = []
        try:
            for line, chunk, digest in chunks:
                if digest in known:
                    _, offset, _, raw = known[digest]
                    records.append((digest, offset, line + offset, raw))
                else:  # parsed where it stands: the padding keeps every line number exact
                    docs = parse_stream("\n" * (line - 1) + chunk, path)
                    records += [(digest, doc.line - line, doc.line, doc.raw) for doc in docs]
        except PromenadeError:
            return self._whole(path, text, chunks)  # the whole file's report of the problem
        return records

    @staticmethod
    def _whole(path: str, text: str, chunks: list[tuple]) -> list[tuple]:
        starts = [line for line, _, _ in chunks]
        records = []
        for doc in parse_stream(text, path):
            line, _, digest = chunks[bisect.bisect_right(starts, doc.line) - 1]
            records.append((digest, doc.line - line, doc.line, doc.raw))
        return records

    @staticmethod
    def _documents(path: str, digest: str, records: list[tuple]) -> list[Document]:
        return [Document(raw, path, line, functools.partial(_node, path, digest, index))
                for index, (_, _, line, raw) in enumerate(records)]

    def _load(self, path: str) -> tuple[str, list[tuple]] | None:
        """(file digest, records) of the entry of ``path``, if it has a readable one."""
        try:
            with open(self.entry(path), encoding="utf-8") as handle:
                header = json.loads(handle.readline())
                if header.get("format") != FORMAT or header.get("path") != os.path.abspath(path):
                    return None
                raws = [load_line(line) for line in handle]
            places = header["documents"]
            if len(places) != len(raws):
                return None
            return header["sha256"], [(chunk, offset, line, raw) for (chunk, offset, line), raw in zip(places, raws)]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _store(self, path: str, digest: str, records: list[tuple]) -> None:
        header = {"format": FORMAT, "path": os.path.abspath(path), "sha256": digest,
                  "documents": [[chunk, offset, line] for chunk, offset, line, _ in records]}
        body = [json.dumps(header, sort_keys=True)] + [encode(raw, sort_keys=False)[0] for *_, raw in records]
        atomic_write(self.entry(path), "".join(line + "\n" for line in body), SECRET_MODE)
