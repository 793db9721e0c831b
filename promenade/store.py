"""The rendered-document store: the documents of one render under ``build/state/<stage>/``.

* ``documents.jsonl``: one document per line in rendered order, as JSON (``{"document": …}``);
  a document JSON cannot hold exactly (a YAML timestamp, non-string keys) is kept as its YAML
  text (``{"yaml": …}``).
* ``index.json``: every document's schema, name, provenance and the sha256 of its line, so it
  changes whenever any document does: a task that reads every document depends on it alone.
* ``schemas/<schema>.sha256``: a digest of the documents of one schema, rewritten only when
  they change, for tasks that read only some schemas (the PKI, HostSystem).

Everything is rewritten only when its content changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from typing import Iterable
from urllib.parse import quote

from .documents import Document
from .errors import PromenadeError, Problem
from .fileio import SECRET_MODE, atomic_write, ensure_dir, remove_quietly

INDEX = "index.json"
DOCUMENTS = "documents.jsonl"
SCHEMAS = "schemas"
LEGACY_DOCS = "docs"  # one file per document in earlier versions (private keys included): removed


def _exact_json(data, sort_keys: bool) -> tuple[str, object] | None:
    """Compact JSON of ``data`` and the value it loads back as, if JSON holds ``data`` exactly
    (the round trip tells), else None."""
    try:
        text = json.dumps(data, sort_keys=sort_keys, ensure_ascii=False, separators=(",", ":"))
        loaded = json.loads(text)
        if loaded == data:
            return text, loaded
    except (TypeError, ValueError):
        pass
    return None


def encode(data, sort_keys: bool = True) -> tuple[str, object]:
    """One line of ``documents.jsonl`` (mappings in key order unless ``sort_keys`` is False) and
    the value :func:`load_line` gives back for it."""
    exact = _exact_json(data, sort_keys)
    if exact is not None:
        text, loaded = exact
        return '{"document":' + text + "}", loaded
    from .yamlio import dump_yaml  # the rare case: loading PyYAML costs every doit run

    return json.dumps({"yaml": dump_yaml(data)}, sort_keys=True, ensure_ascii=False), data


def load_line(line: str):
    """The document of a line of ``documents.jsonl`` (see :func:`encode`)."""
    record = json.loads(line)
    if "document" in record:
        return record["document"]
    from .yamlio import load_yaml

    return load_yaml(record["yaml"])


def index_path(store_dir: str) -> str:
    return os.path.join(store_dir, INDEX)


def schema_stamp(store_dir: str, schema: str) -> str:
    """The digest file of ``schema``'s documents (it exists only while the store has some)."""
    return os.path.join(store_dir, SCHEMAS, quote(schema.replace("/", "_"), safe="-_.") + ".sha256")


def write_store(store_dir: str, docs: Iterable[Document]) -> list[Document]:
    """Write the documents, the index and the schema digests.

    Returns the documents as stored: what :func:`load_documents` gives back.
    """
    ensure_dir(store_dir)
    entries, lines, stored, by_schema = [], [], [], {}
    for doc in docs:
        key = (doc.schema, doc.name)
        if key in by_schema.get(doc.schema, {}):  # rendering guarantees uniqueness of (schema, name)
            raise PromenadeError(doc.problem("two rendered documents share this schema and name"))
        line, value = encode(doc.to_dict())
        digest = hashlib.sha256(line.encode("utf-8")).hexdigest()
        lines.append(line)
        stored.append(Document(value, doc.file, doc.line))
        entries.append({"schema": doc.schema, "name": doc.name, "source": doc.file, "line": doc.line,
                        "sha256": digest})
        by_schema.setdefault(doc.schema, {})[key] = digest
    atomic_write(os.path.join(store_dir, DOCUMENTS), "".join(line + "\n" for line in lines), SECRET_MODE)
    wanted = set()
    for schema, digests in by_schema.items():
        path = schema_stamp(store_dir, schema)
        wanted.add(path)
        atomic_write(path, hashlib.sha256(json.dumps(list(digests.values())).encode()).hexdigest() + "\n")
    stamps = os.path.join(store_dir, SCHEMAS)
    for name in os.listdir(stamps) if os.path.isdir(stamps) else []:
        if os.path.join(stamps, name) not in wanted:
            remove_quietly(os.path.join(stamps, name))
    index = ",\n".join(json.dumps(entry, sort_keys=True) for entry in entries)  # one entry per line
    atomic_write(index_path(store_dir), '{"documents": [\n' + index + "\n]}\n", SECRET_MODE)
    shutil.rmtree(os.path.join(store_dir, LEGACY_DOCS), ignore_errors=True)
    return stored


def read_index(store_dir: str) -> list[dict]:
    """Entries of the store's index, in rendered order."""
    try:
        with open(index_path(store_dir), encoding="utf-8") as handle:
            return json.load(handle)["documents"]
    except FileNotFoundError:
        raise PromenadeError(Problem(f"{store_dir} has not been rendered yet (run `doit render`)",
                                     file=index_path(store_dir))) from None


def load_documents(store_dir: str, schemas: Iterable[str] | None = None) -> list[Document]:
    """Documents of the store in rendered order; only the given schemas if ``schemas`` is set."""
    wanted = set(schemas) if schemas is not None else None
    index = read_index(store_dir)
    try:
        with open(os.path.join(store_dir, DOCUMENTS), encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        lines = None
    if lines is None or len(lines) != len(index):
        raise PromenadeError(Problem(f"{store_dir} is incomplete (an interrupted render?): run the build again",
                                     file=os.path.join(store_dir, DOCUMENTS)))
    return [Document(load_line(line), entry.get("source"), entry.get("line")) for entry, line in zip(index, lines)
            if wanted is None or entry["schema"] in wanted]


def load_document(store_dir: str, schema: str, name: str) -> Document:
    """One document of the store."""
    for doc in load_documents(store_dir, [schema]):
        if doc.name == name:
            return doc
    raise PromenadeError(Problem(f"no document {schema} {name!r} in {store_dir}"))
