"""Deckhand-compatible rendering: layering, replacement and substitution.

:func:`render` turns the site's documents into concrete documents:

1. metadata is checked (envelope, layering definition, substitutions) and the single
   ``deckhand/LayeringPolicy/v1`` gives the layer order;
2. every child with a ``parentSelector`` gets the same-schema parent in the nearest higher
   layer whose labels contain the selector;
3. documents are rendered in dependency order (parent and substitution sources first):
   the child's ``actions`` apply to its parent's rendered data, then its ``substitutions``
   copy values out of other rendered documents;
4. abstract documents and documents replaced by a ``replacement: true`` child are dropped.

Every mistake becomes a :class:`~promenade.errors.Problem` located in the operator's file;
all of them are raised together as one :class:`~promenade.errors.PromenadeError`.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from typing import Any

from .documents import Document, check_envelopes
from .errors import Problem, PromenadeError
from .paths import MISSING, PathError, clone, delete_path, get_path, parse_path, set_path
from .schemacheck import SchemaCheck

LAYERING_POLICY = "deckhand/LayeringPolicy/v1"
DOCUMENT_METADATA = "metadata/Document/v1"
CONTROL_METADATA = "metadata/Control/v1"

_SCALAR = {"type": ["string", "number", "boolean", "null"]}
_STRING = {"type": "string"}
_DEST = {
    "type": "object",
    "required": ["path"],
    "properties": {
        "path": _STRING,
        "pattern": _STRING,
        "recurse": {
            "type": "object",
            "required": ["depth"],
            "properties": {"depth": {"type": "integer", "minimum": -1}},
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}
_SUBSTITUTION = {
    "type": "object",
    "required": ["src", "dest"],
    "properties": {
        "src": {
            "type": "object",
            "required": ["schema", "name", "path"],
            "properties": {"schema": _STRING, "name": _STRING, "path": _STRING, "pattern": _STRING,
                           "match_group": {"type": "integer", "minimum": 0}},
            "additionalProperties": False,
        },
        "dest": {
            "type": ["object", "array"],
            "if": {"type": "array"},
            "then": {"minItems": 1, "items": _DEST},
            "else": _DEST,
        },
    },
    "additionalProperties": False,
}
_LAYERING_DEFINITION = {
    "type": "object",
    "properties": {
        "layer": _STRING,
        "abstract": {"type": "boolean"},
        "parentSelector": {"type": "object", "minProperties": 1, "additionalProperties": _SCALAR},
        "actions": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["method", "path"],
                "properties": {"method": {"enum": ["merge", "replace", "delete"]}, "path": _STRING},
                "additionalProperties": False,
            },
        },
    },
    "dependentRequired": {"parentSelector": ["actions"], "actions": ["parentSelector"]},
    "additionalProperties": False,
}
_CONTROL_METADATA = {
    "type": "object",
    "properties": {
        "schema": {"enum": [DOCUMENT_METADATA, CONTROL_METADATA]},
        "name": _STRING,
        "labels": {"type": "object", "additionalProperties": _SCALAR},
        "storagePolicy": {"enum": ["cleartext", "encrypted"]},
        "replacement": {"type": "boolean"},
        "layeringDefinition": _LAYERING_DEFINITION,
        "substitutions": {"type": "array", "items": _SUBSTITUTION},
    },
    "additionalProperties": False,
}
_DOCUMENT_METADATA = {
    **_CONTROL_METADATA,
    "required": ["layeringDefinition"],
    "properties": {
        **_CONTROL_METADATA["properties"],
        "layeringDefinition": {**_LAYERING_DEFINITION, "required": ["layer"]},
    },
}
_POLICY_DATA = {
    "type": "object",
    "required": ["layerOrder"],
    "properties": {"layerOrder": {"type": "array", "items": _STRING}},
    "additionalProperties": False,
}
_DOCUMENT_CHECK = SchemaCheck(_DOCUMENT_METADATA)
_CONTROL_CHECK = SchemaCheck(_CONTROL_METADATA)
_POLICY_CHECK = SchemaCheck(_POLICY_DATA)

_LAYER_PATH = ("metadata", "layeringDefinition", "layer")
_SELECTOR_PATH = ("metadata", "layeringDefinition", "parentSelector")
_DATA_PREFIX = re.compile(r"^\$?\.data(?=$|[.\[])")


@dataclass
class Rendered:
    """The result of :func:`render`."""

    documents: list[Document]
    pending_warnings: list[tuple[Document, str, tuple]] = field(default_factory=list, repr=False)

    @functools.cached_property
    def warnings(self) -> list[Problem]:
        """Warnings, located when first asked for: finding a line can mean parsing its file again
        (see :mod:`.parsecache`), and a build that only stores the result never asks."""
        return _by_location([doc.problem(message, path, severity="warning")
                             for doc, message, path in self.pending_warnings])


def render(docs: list[Document], strict: bool = True) -> Rendered:
    """Render ``docs``; the input documents are never modified.

    Returns the concrete, non-replaced documents (control documents included) in input
    order, as new documents keeping their source's file/line. ``strict=False`` turns a
    missing substitution source (or source path) into a warning, as needed before the
    certificates exist. Raises :class:`PromenadeError` with every problem found.
    """
    return _Renderer(list(docs), strict).run()


def _where(doc: Document) -> str:
    return f"{doc.schema} {doc.name} ({doc.file}:{doc.line})"


def _shape(metadata: dict) -> str | None:
    """``metadata`` with its (string) name blanked, as a key; None if not plain JSON data."""
    try:
        return json.dumps({**metadata, "name": ""}, sort_keys=True)
    except (TypeError, ValueError):
        return None


def _by_location(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.file or "", p.line or 0))


def _action_parts(path: str) -> tuple:
    """Action paths are relative to ``data``: a leading ``.data`` / ``$.data`` is dropped."""
    path = _DATA_PREFIX.sub("", path.strip()) or "."
    return parse_path(path if path.startswith((".", "$")) else "." + path)


def _deep_merge(target: dict, source: dict) -> None:
    """Merge ``source`` into ``target``: mappings recurse, anything else (lists too) wins."""
    for key, value in source.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_merge(target[key], value)
        else:
            target[key] = clone(value)


def _replace_recursively(node: Any, pattern: str, substitute, depth: int, max_depth: int) -> None:
    """Pattern-substitute strings under ``node`` that contain ``pattern`` literally."""
    if depth == max_depth:
        return
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in list(items):
        if isinstance(value, str) and pattern in value:
            node[key] = substitute(value)
        else:
            _replace_recursively(value, pattern, substitute, depth + 1, max_depth)


class _Renderer:
    """One rendering run. Documents are referred to by their index in the input list."""

    def __init__(self, docs: list[Document], strict: bool):
        self.docs = docs
        self.strict = strict
        self.problems: list[Problem] = []
        self.pending_warnings: list[tuple[Document, str, tuple]] = []  # see Rendered.warnings
        self.layer_index: dict[str, int] = {}
        self.layered: list[int] = []   # documents that take part in layering
        self.parent: dict[int, int] = {}
        self.replaced_by: dict[int, int] = {}
        self.sources: dict[tuple, int] = {}
        self.abstract_keys: set[tuple] = set()
        self.rendered: dict[int, Any] = {}  # index -> rendered data
        self.encrypted: set[int] = set()
        self.policy: Document | None = None

    # --- driver ---------------------------------------------------------------------------
    def run(self) -> Rendered:
        self._fail_if(check_envelopes(self.docs))
        self._check_metadata()
        self._read_layering_policy()
        self._fail_if(self.problems)
        self._index_layers()
        self._fail_if(self.problems)
        self._select_parents()
        self._check_replacements()
        self._fail_if(self.problems)
        self._index_sources()
        for index in self._dependency_order():
            self._render_one(index)
        self._fail_if(self.problems)
        return Rendered(self._output(), self.pending_warnings)

    def _fail_if(self, problems: list[Problem]) -> None:
        if problems:
            raise PromenadeError(_by_location(problems))

    def _warn(self, doc: Document, message: str, path=()) -> None:
        self.pending_warnings.append((doc, message, tuple(path)))

    def _fail_or_warn(self, doc: Document, message: str, path) -> None:
        """A problem in strict mode, a warning in lenient mode."""
        if self.strict:
            self.problems.append(doc.problem(message, path))
        else:
            self._warn(doc, message, path)

    # --- checks and indexes -----------------------------------------------------------------
    def _check_metadata(self) -> None:
        valid_shapes: set[str] = set()  # many documents differ only by name: check each shape once
        for doc in self.docs:
            shape = _shape(doc.metadata)
            if shape in valid_shapes:
                continue
            check = _CONTROL_CHECK if doc.is_control else _DOCUMENT_CHECK
            errors = [doc.problem(error.message, ["metadata", *error.absolute_path])
                      for error in check.errors(doc.metadata)]
            self.problems.extend(errors)
            if not errors and shape is not None:
                valid_shapes.add(shape)

    def _read_layering_policy(self) -> None:
        policies = [doc for doc in self.docs if doc.schema == LAYERING_POLICY]
        if not policies:
            raise PromenadeError(Problem(f"a {LAYERING_POLICY} document is required for layering "
                                         "but none was found"))
        policy = policies[0]
        for extra in policies[1:]:
            self._warn(extra, f"only the first LayeringPolicy {_where(policy)} is used; this one "
                              "is ignored")
        errors = _POLICY_CHECK.errors(policy.data)
        for error in errors:
            self.problems.append(policy.problem(error.message, ["data", *error.absolute_path]))
        if not errors:
            self.layer_index = {layer: pos for pos, layer in enumerate(policy.data["layerOrder"])}
        self.policy = policy

    def _index_layers(self) -> None:
        seen: dict[tuple, Document] = {}
        order = ", ".join(self.layer_index)
        for index, doc in enumerate(self.docs):
            layer = None if doc.is_control else doc.layer
            key = (doc.schema, layer, doc.name)
            if key in seen:
                self.problems.append(doc.problem(
                    f"duplicate document: {_where(seen[key])} has the same schema, layer and name"))
                continue
            seen[key] = doc
            if doc.is_control:
                continue
            if layer not in self.layer_index:
                self.problems.append(doc.problem(
                    f"layer {layer!r} is not in the layerOrder [{order}] of LayeringPolicy "
                    f"{_where(self.policy)}", _LAYER_PATH))
                continue
            self.layered.append(index)

    def _select_parents(self) -> None:
        """Parent = same schema, labels ⊇ selector, nearest layer above the child."""
        by_label: dict[tuple, list[int]] = {}
        for index in self.layered:
            for item in self.docs[index].labels.items():
                by_label.setdefault(item, []).append(index)
        for child in self.layered:
            doc = self.docs[child]
            selector = doc.layering.get("parentSelector")
            if not selector:
                continue
            items = list(selector.items())
            pool = min((by_label.get(item, []) for item in items), key=len)
            candidates = [i for i in pool if i != child
                          and all(self.docs[i].labels.get(k) == v for k, v in items)]
            above: list[int] = []
            for i in candidates:
                other = self.docs[i]
                if other.schema != doc.schema:
                    self.problems.append(doc.problem(
                        f"parentSelector matches {_where(other)}, which has a different schema",
                        _SELECTOR_PATH))
                elif self.layer_index[other.layer] >= self.layer_index[doc.layer]:
                    self.problems.append(doc.problem(
                        f"parentSelector matches {_where(other)} in layer {other.layer!r}, which is "
                        f"not above this document's layer {doc.layer!r}", _SELECTOR_PATH))
                else:
                    above.append(i)
            if not candidates:
                self._warn(doc, "parentSelector matches no document; rendered without layering",
                           _SELECTOR_PATH)
            if not above:
                continue
            nearest = max(self.layer_index[self.docs[i].layer] for i in above)
            closest = [i for i in above if self.layer_index[self.docs[i].layer] == nearest]
            if len(closest) > 1:
                self.problems.append(doc.problem(
                    "parentSelector matches several documents in the nearest layer: "
                    + ", ".join(_where(self.docs[i]) for i in closest), _SELECTOR_PATH))
                continue
            self.parent[child] = closest[0]

    def _check_replacements(self) -> None:
        plain: dict[tuple, list[int]] = {}
        for index in self.layered:
            doc = self.docs[index]
            if doc.metadata.get("replacement") is not True:
                plain.setdefault(doc.key, []).append(index)
                continue
            parent = self.parent.get(index)
            parent_doc = self.docs[parent] if parent is not None else None
            path = ["metadata", "replacement"]
            if parent_doc is None:
                self.problems.append(doc.problem("a replacement document needs a parent "
                                                 "(parentSelector matching a higher layer)", path))
            elif parent_doc.key != doc.key:
                self.problems.append(doc.problem(
                    f"a replacement must have the same schema and name as its parent "
                    f"{_where(parent_doc)}", path))
            elif parent_doc.metadata.get("replacement") is True:
                self.problems.append(doc.problem(
                    f"its parent {_where(parent_doc)} is itself a replacement; a replacement "
                    "cannot be replaced again", path))
            else:
                self.replaced_by[parent] = index
        for first, *others in plain.values():
            for index in others:
                self.problems.append(self.docs[index].problem(
                    f"{_where(self.docs[first])} has the same schema and name in another layer; "
                    "only a child with metadata.replacement: true may share them"))

    def _index_sources(self) -> None:
        """Concrete documents by (schema, name); a replaced document resolves to its replacement."""
        for index, doc in enumerate(self.docs):
            if doc.abstract and not doc.is_control:
                self.abstract_keys.add(doc.key)
                continue
            self.sources.setdefault(doc.key, self.replaced_by.get(index, index))

    def _base(self, index: int) -> int | None:
        """The document whose rendered data ``index`` layers onto (a replacement stands in)."""
        parent = self.parent.get(index)
        if parent is None:
            return None
        replacement = self.replaced_by.get(parent)
        return replacement if replacement is not None and replacement != index else parent

    def _dependency_order(self) -> list[int]:
        graph = TopologicalSorter()
        for index in self.layered:
            deps = [self._base(index)] if index in self.parent else []
            for sub in self.docs[index].metadata.get("substitutions") or ():
                source = self.sources.get((sub["src"]["schema"], sub["src"]["name"]))
                if source is not None:
                    deps.append(source)
            graph.add(index, *deps)
        try:
            return list(graph.static_order())
        except CycleError as exc:
            cycle = exc.args[1][::-1]  # now each document needs the next one
            first = self.docs[cycle[0]]
            via = _SELECTOR_PATH if self._base(cycle[0]) == cycle[1] else ("metadata", "substitutions")
            chain = " -> ".join(_where(self.docs[i]) for i in cycle)
            raise PromenadeError(first.problem(f"dependency cycle (each document needs the next): "
                                               f"{chain}", via)) from None

    # --- rendering ----------------------------------------------------------------------------
    def _render_one(self, index: int) -> None:
        doc = self.docs[index]
        base = self._base(index)
        if base is None:
            data = clone(doc.data)
        else:
            data = clone(self.rendered[base])
            for number, action in enumerate(doc.layering["actions"]):
                data = self._apply_action(doc, number, action, data)
        for number, sub in enumerate(doc.metadata.get("substitutions") or ()):
            data = self._substitute(doc, index, number, sub, data)
        self.rendered[index] = data

    def _apply_action(self, doc: Document, number: int, action: dict, data: Any) -> Any:
        where = ["metadata", "layeringDefinition", "actions", number, "path"]
        try:
            parts = _action_parts(action["path"])
        except PathError as exc:
            self.problems.append(doc.problem(str(exc), where))
            return data
        method = action["method"]
        if method == "delete":
            try:
                return delete_path(data, parts)
            except PathError:
                self.problems.append(doc.problem(
                    f"delete: {action['path']} does not exist in the parent's data", where))
                return data
        value = get_path(doc.data, parts)
        if value is MISSING:
            self.problems.append(doc.problem(
                f"{method}: {action['path']} does not exist in this document's data", where))
            return data
        if method == "merge" and isinstance(value, dict):
            current = get_path(data, parts)
            if isinstance(current, dict):
                _deep_merge(current, value)
                return data
        try:
            return set_path(data, parts, clone(value))
        except PathError as exc:
            self.problems.append(doc.problem(f"{method}: {exc}", where))
            return data

    def _substitute(self, doc: Document, index: int, number: int, sub: dict, data: Any) -> Any:
        here = ["metadata", "substitutions", number]
        src = sub["src"]
        key = (src["schema"], src["name"])
        source = self.sources.get(key)
        if source is None:
            hint = " (abstract documents are never sources)" if key in self.abstract_keys else ""
            self._fail_or_warn(doc, f"substitution source {src['schema']} {src['name']} not found"
                               + hint, here + ["src", "name"])
            return data
        if source in self.encrypted or self.docs[source].metadata.get("storagePolicy") == "encrypted":
            self.encrypted.add(index)
        value = self._source_value(doc, here, src, self.rendered.get(source, self.docs[source].data))
        if value is MISSING:
            return data
        dests = sub["dest"] if isinstance(sub["dest"], list) else [sub["dest"]]
        for position, dest in enumerate(dests):
            where = here + ["dest"] + ([position] if isinstance(sub["dest"], list) else [])
            data = self._write_dest(doc, where, dest, value, data)
        return data

    def _source_value(self, doc: Document, here: list, src: dict, source_data: Any) -> Any:
        """The value a substitution copies; MISSING after reporting a problem."""
        if isinstance(source_data, dict):
            try:
                value = get_path(source_data, parse_path(src["path"]))
            except PathError as exc:
                self.problems.append(doc.problem(str(exc), here + ["src", "path"]))
                return MISSING
            if value is MISSING:
                self._fail_or_warn(doc, f"path {src['path']} not found in substitution source "
                                        f"{src['schema']} {src['name']}; using null",
                                   here + ["src", "path"])
                return MISSING if self.strict else None
        else:
            value = source_data
        pattern = src.get("pattern")
        if pattern is None:
            return clone(value)
        if not isinstance(value, str):
            self.problems.append(doc.problem(f"src.pattern needs a string source value, not "
                                             f"{type(value).__name__}", here + ["src", "pattern"]))
            return MISSING
        try:
            match = re.search(pattern, value)
            if match is None:
                self._warn(doc, f"src.pattern {pattern!r} does not match; using the whole value",
                           here + ["src", "pattern"])
                return value
            return match.group(src.get("match_group", 0))
        except (re.error, IndexError) as exc:
            self.problems.append(doc.problem(f"src.pattern/match_group: {exc}", here + ["src"]))
            return MISSING

    def _write_dest(self, doc: Document, where: list, dest: dict, value: Any, data: Any) -> Any:
        try:
            parts = parse_path(dest["path"])
        except PathError as exc:
            self.problems.append(doc.problem(str(exc), where + ["path"]))
            return data
        pattern = dest.get("pattern")
        if pattern is None:
            try:
                return set_path(data, parts, clone(value))
            except PathError as exc:
                self._fail_or_warn(doc, f"cannot substitute into {dest['path']}: {exc}", where + ["path"])
                return data
        text = str(value)
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            self.problems.append(doc.problem(f"dest.pattern: {exc}", where + ["pattern"]))
            return data

        def substitute(target: str) -> str:
            return regex.sub(lambda _: text, target)

        target = get_path(data, parts)
        if "recurse" in dest and isinstance(target, (dict, list)):
            _replace_recursively(target, pattern, substitute, 0, dest["recurse"]["depth"])
            return data
        if not isinstance(target, str):
            what = "does not exist" if target is MISSING else f"is a {type(target).__name__}"
            self.problems.append(doc.problem(
                f"dest.pattern needs an existing string at {dest['path']}, but it {what}",
                where + ["path"]))
            return data
        return set_path(data, parts, substitute(target))

    # --- output ---------------------------------------------------------------------------------
    def _output(self) -> list[Document]:
        out = []
        for index, doc in enumerate(self.docs):
            if doc.is_control:
                out.append(doc.copy())
                continue
            if doc.abstract or index in self.replaced_by:
                continue
            metadata = clone(doc.metadata)
            if index in self.encrypted:
                metadata["storagePolicy"] = "encrypted"
            raw = {**doc.raw, "metadata": metadata, "data": self.rendered[index]}
            out.append(Document(raw, doc.file, doc.line, doc.node))
        return out
