"""Site documents: loading YAML files with provenance.

A site is every ``*.yaml`` / ``*.yml`` file below a directory, read recursively in sorted
order. Each YAML document becomes a :class:`Document` that remembers its file and line, and
can tell the line of any path inside it, so that every error points at the operator's file.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from .errors import Problem, PromenadeError

YAML_SUFFIXES = (".yaml", ".yml")


@dataclass
class Document:
    """One Deckhand-style document (``schema`` / ``metadata`` / ``data``) and where it came from."""

    raw: Any
    file: str | None = None
    line: int | None = None
    #: the YAML node (for the lines of paths inside), or a function that gives it on first use
    node: Any = field(default=None, repr=False, compare=False)

    # --- envelope accessors -------------------------------------------------------------
    @property
    def schema(self) -> str | None:
        return self.raw.get("schema") if isinstance(self.raw, dict) else None

    @property
    def metadata(self) -> dict:
        meta = self.raw.get("metadata") if isinstance(self.raw, dict) else None
        return meta if isinstance(meta, dict) else {}

    @property
    def name(self) -> str | None:
        return self.metadata.get("name")

    @property
    def data(self) -> Any:
        return self.raw.get("data") if isinstance(self.raw, dict) else None

    @data.setter
    def data(self, value: Any) -> None:
        self.raw["data"] = value

    @property
    def kind(self) -> str | None:
        """The middle part of the schema: ``promenade/Genesis/v1`` -> ``Genesis``."""
        parts = (self.schema or "").split("/")
        return parts[1] if len(parts) == 3 else None

    @property
    def layering(self) -> dict:
        value = self.metadata.get("layeringDefinition")
        return value if isinstance(value, dict) else {}

    @property
    def layer(self) -> str | None:
        return self.layering.get("layer")

    @property
    def abstract(self) -> bool:
        return bool(self.layering.get("abstract", False))

    @property
    def labels(self) -> dict:
        value = self.metadata.get("labels")
        return value if isinstance(value, dict) else {}

    @property
    def is_control(self) -> bool:
        return self.metadata.get("schema") == "metadata/Control/v1"

    @property
    def key(self) -> tuple[str | None, str | None]:
        return (self.schema, self.name)

    # --- provenance ---------------------------------------------------------------------
    def line_of(self, path: Iterable[Any] = ()) -> int | None:
        """1-based line of ``path`` (keys / list indices from the document root).

        Falls back to the deepest existing ancestor, then to the document's first line.
        """
        import yaml  # imported on use: a no-op doit run never parses YAML

        node = self.node
        if callable(node):
            node = self.node = node()
        best = self.line
        for part in path:
            if node is None:
                break
            child = None
            if isinstance(node, yaml.MappingNode):
                for key_node, value_node in node.value:
                    if getattr(key_node, "value", None) == str(part):
                        child = value_node
                        best = key_node.start_mark.line + 1
                        break
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if 0 <= part < len(node.value):
                    child = node.value[part]
                    best = child.start_mark.line + 1
            node = child
        return best

    def problem(self, message: str, path: Iterable[Any] = (), severity: str = "error") -> Problem:
        """A :class:`Problem` located at ``path`` inside this document."""
        path = list(path)
        return Problem(
            message=message,
            file=self.file,
            line=self.line_of(path),
            schema=self.schema,
            name=self.name,
            path=format_path(path) if path else None,
            severity=severity,
        )

    def copy(self) -> "Document":
        return Document(copy.deepcopy(self.raw), self.file, self.line, self.node)

    def to_dict(self) -> dict:
        return self.raw


def format_path(path: Iterable[Any]) -> str:
    """``['data', 'nodes', 0, 'ip']`` -> ``.data.nodes[0].ip``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out or "."


def site_files(site_dir: str) -> list[str]:
    """Every YAML file below ``site_dir``, recursively, in sorted order."""
    if not os.path.isdir(site_dir):
        raise PromenadeError(Problem(f"site directory {site_dir!r} does not exist", file=site_dir))
    found = []
    for root, dirs, files in os.walk(site_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(os.path.join(root, f) for f in files if f.endswith(YAML_SUFFIXES))
    return sorted(found)


def parse_stream(text: str, file: str | None = None) -> list[Document]:
    """Parse a multi-document YAML text. Empty documents are skipped.

    Raises :class:`PromenadeError` for YAML syntax errors, naming the file and line.
    """
    import yaml  # imported on use: a no-op doit run never parses YAML

    docs = []
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)  # libyaml is ~10x faster
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            raw = loader.construct_document(node)
            if raw is None:
                continue
            docs.append(Document(raw, file, node.start_mark.line + 1, node))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        what = exc.problem or exc.context or "invalid YAML"
        raise PromenadeError(Problem(f"YAML syntax error: {what}", file=file, line=line)) from None
    except yaml.YAMLError as exc:
        raise PromenadeError(Problem(f"YAML error: {exc}", file=file)) from None
    finally:
        loader.dispose()
    return docs


def read_bytes(path: str) -> bytes:
    """The bytes of one site file; :class:`PromenadeError` naming it if it cannot be read."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise PromenadeError(Problem(f"cannot read file: {exc}", file=path)) from None


def decode(data: bytes, path: str) -> str:
    """The text of a file's bytes (UTF-8); :class:`PromenadeError` naming the file."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PromenadeError(Problem(f"cannot read file: {exc}", file=path)) from None


def parse_bytes(data: bytes, path: str) -> list[Document]:
    """The documents of one file's bytes (UTF-8 YAML); :class:`PromenadeError` naming the file."""
    return parse_stream(decode(data, path), path)


def read_file(path: str) -> list[Document]:
    """The documents of one file."""
    return parse_bytes(read_bytes(path), path)


def load_files(paths: Iterable[str], read: Callable[[str], list[Document]] = read_file) -> list[Document]:
    """Load documents from files (each with ``read``); problems of all files are reported together."""
    docs: list[Document] = []
    problems: list[Problem] = []
    for path in paths:
        try:
            docs.extend(read(path))
        except PromenadeError as exc:
            problems.extend(exc.problems)
    if problems:
        raise PromenadeError(problems)
    return docs


def load_site(site_dir: str) -> list[Document]:
    """All documents of the site below ``site_dir``."""
    return load_files(site_files(site_dir))


def check_envelopes(docs: Iterable[Document]) -> list[Problem]:
    """Structural checks every document must pass before rendering."""
    problems = []
    for doc in docs:
        if not isinstance(doc.raw, dict):
            problems.append(doc.problem(f"document must be a mapping with schema, metadata and data, "
                                        f"not a {type(doc.raw).__name__}"))
            continue
        extra = sorted(set(doc.raw) - {"schema", "metadata", "data"})
        if extra:
            problems.append(doc.problem(f"unexpected top-level key(s) {', '.join(map(str, extra))}; "
                                        "only schema, metadata and data are allowed", [extra[0]]))
        schema = doc.raw.get("schema")
        if schema is None:
            problems.append(doc.problem('"schema" is a required document key', ["schema"]))
        elif not isinstance(schema, str) or len(schema.split("/")) != 3 or not all(schema.split("/")):
            problems.append(doc.problem(f"schema {schema!r} must look like namespace/Kind/vN", ["schema"]))
        meta = doc.raw.get("metadata")
        if not isinstance(meta, dict):
            problems.append(doc.problem('"metadata" is required and must be a mapping', ["metadata"]))
            continue
        if not isinstance(meta.get("name"), str) or not meta.get("name"):
            problems.append(doc.problem('"metadata.name" is required and must be a string',
                                        ["metadata", "name"]))
    return problems
