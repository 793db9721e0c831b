"""The rendered-document store: one file per document under ``build/state/<stage>/``.

Each file is JSON (YAML's fast subset: indented, sorted keys); a document JSON cannot hold
(e.g. a YAML timestamp) is written as YAML instead. Both load with any YAML reader.

Later tasks declare ``file_dep`` on exactly the documents they use. Files are rewritten only
when their content changes, so editing one node's document touches only that node's file.
``index.json`` lists every document in rendered order with its provenance and the sha256 of its
file, so it changes whenever any document does: a task that reads every document can depend
on the index alone.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Iterable
from urllib.parse import quote

from .documents import Document
from .errors import PromenadeError, Problem
from .fileio import SECRET_MODE, atomic_write, ensure_dir, remove_quietly

INDEX = "index.json"
DOCS = "docs"

def dump_document(data) -> str:
    """One stored document: JSON when it holds ``data`` exactly (fast), else YAML.

    JSON cannot hold YAML timestamps or binary, and turns non-string keys into strings: the
    round trip tells.
    """
    try:
        text = json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False)
        if json.loads(text) == data:
            return text + "\n"
    except (TypeError, ValueError):
        pass
    from .yamlio import dump_yaml  # YAML is the rare case: loading PyYAML costs every doit run

    return dump_yaml(data)


def load_document_text(text: str):
    """Inverse of :func:`dump_document`."""
    if text.startswith("{"):
        return json.loads(text)
    from .yamlio import load_yaml

    return load_yaml(text)


def _slug(text: str) -> str:
    return quote(text, safe="-_.") or "_"


def relative_doc_path(schema: str, name: str) -> str:
    """Path of a document's file inside a store, e.g. ``docs/promenade_Genesis_v1/genesis.yaml``."""
    return f"{DOCS}/{_slug(schema.replace('/', '_'))}/{_slug(name)}.yaml"


def doc_path(store_dir: str, schema: str, name: str) -> str:
    """Absolute-or-relative path of one document's file in ``store_dir``."""
    return os.path.join(store_dir, relative_doc_path(schema, name))


def index_path(store_dir: str) -> str:
    return os.path.join(store_dir, INDEX)


def write_store(store_dir: str, docs: Iterable[Document]) -> list[str]:
    """Write every document and the index; remove files of documents that left.

    Returns the relative paths of document files whose content changed.
    """
    ensure_dir(store_dir)
    entries, changed, wanted = [], [], set()
    for doc in docs:
        rel = relative_doc_path(doc.schema, doc.name)
        if rel in wanted:  # rendering guarantees uniqueness of (schema, name)
            raise PromenadeError(doc.problem("two rendered documents share this schema and name"))
        wanted.add(rel)
        text = dump_document(doc.to_dict()).encode("utf-8")
        entries.append({"schema": doc.schema, "name": doc.name, "file": rel, "source": doc.file, "line": doc.line,
                        "sha256": hashlib.sha256(text).hexdigest()})
        if atomic_write(os.path.join(store_dir, rel), text, SECRET_MODE):
            changed.append(rel)
    docs_root = os.path.join(store_dir, DOCS)
    for root, _dirs, files in os.walk(docs_root):
        for filename in files:
            full = os.path.join(root, filename)
            if os.path.relpath(full, store_dir) not in wanted:
                remove_quietly(full)
    atomic_write(index_path(store_dir), json.dumps({"documents": entries}, indent=1, sort_keys=True) + "\n",
                 SECRET_MODE)
    return changed


def read_index(store_dir: str, missing_ok: bool = False) -> list[dict]:
    """Entries of the store's index, in rendered order.

    ``missing_ok`` gives ``[]`` for a store not rendered yet: task creators run without
    executing anything for ``doit list`` / ``doit info``, before any store exists.
    """
    try:
        with open(index_path(store_dir), encoding="utf-8") as handle:
            return json.load(handle)["documents"]
    except FileNotFoundError:
        if missing_ok:
            return []
        raise PromenadeError(Problem(f"{store_dir} has not been rendered yet (run `doit render`)",
                                     file=index_path(store_dir))) from None


def _load_entry(store_dir: str, entry: dict) -> Document:
    with open(os.path.join(store_dir, entry["file"]), encoding="utf-8") as handle:
        raw = load_document_text(handle.read())
    return Document(raw, entry.get("source"), entry.get("line"))


def load_documents(store_dir: str, schemas: Iterable[str] | None = None) -> list[Document]:
    """Documents of the store in rendered order; only the given schemas if ``schemas`` is set."""
    wanted = set(schemas) if schemas is not None else None
    return [_load_entry(store_dir, entry) for entry in read_index(store_dir)
            if wanted is None or entry["schema"] in wanted]


def load_document(store_dir: str, schema: str, name: str) -> Document:
    """One document of the store."""
    for entry in read_index(store_dir):
        if entry["schema"] == schema and entry["name"] == name:
            return _load_entry(store_dir, entry)
    raise PromenadeError(Problem(f"no document {schema} {name!r} in {store_dir}"))
