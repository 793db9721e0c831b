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


def _exact_json(data) -> str | None:
    """Compact, sorted JSON of ``data`` if JSON holds it exactly (the round trip tells), else None."""
    try:
        text = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        if json.loads(text) == data:
            return text
    except (TypeError, ValueError):
        pass
    return None


def dump_line(data) -> str:
    """One line of ``documents.jsonl``."""
    text = _exact_json(data)
    if text is not None:
        return '{"document":' + text + "}"
    from .yamlio import dump_yaml  # the rare case: loading PyYAML costs every doit run

    return json.dumps({"yaml": dump_yaml(data)}, sort_keys=True, ensure_ascii=False)


def load_line(line: str):
    """Inverse of :func:`dump_line`."""
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


def write_store(store_dir: str, docs: Iterable[Document]) -> list[tuple[str, str]]:
    """Write the documents, the index and the schema digests.

    Returns the (schema, name) of every document that is new or changed.
    """
    ensure_dir(store_dir)
    before = {(e["schema"], e["name"]): e.get("sha256") for e in read_index(store_dir, missing_ok=True)}
    entries, lines, changed, by_schema = [], [], [], {}
    for doc in docs:
        key = (doc.schema, doc.name)
        if key in by_schema.get(doc.schema, {}):  # rendering guarantees uniqueness of (schema, name)
            raise PromenadeError(doc.problem("two rendered documents share this schema and name"))
        line = dump_line(doc.to_dict())
        digest = hashlib.sha256(line.encode("utf-8")).hexdigest()
        lines.append(line)
        entries.append({"schema": doc.schema, "name": doc.name, "source": doc.file, "line": doc.line,
                        "sha256": digest})
        by_schema.setdefault(doc.schema, {})[key] = digest
        if before.get(key) != digest:
            changed.append(key)
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
    atomic_write(index_path(store_dir), json.dumps({"documents": entries}, indent=1, sort_keys=True) + "\n",
                 SECRET_MODE)
    shutil.rmtree(os.path.join(store_dir, LEGACY_DOCS), ignore_errors=True)
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
