"""JSON Schema checks in two steps: a compiled validator decides, the reference one explains.

jsonschema-rs answers whether an instance is valid. Only an instance it rejects (or cannot take,
such as a mapping with non-string keys) goes to python-jsonschema, whose errors Promenade's
messages are made from and whose verdict is final: where the two differ, the reference wins.
Rendering and validating a valid site therefore never imports python-jsonschema, which costs
about 60 ms, a fifth of a one-node rebuild.
"""

from __future__ import annotations

import functools
from typing import Any, Callable


def _draft202012(schema: dict):
    from jsonschema import Draft202012Validator

    return Draft202012Validator(schema)


class SchemaCheck:
    """One schema. ``reference`` builds its python-jsonschema validator (default: draft 2020-12,
    no formats); ``options`` are jsonschema-rs's (``base_uri``, ``retriever``, ``formats`` …)."""

    def __init__(self, schema: dict, reference: Callable[[], Any] | None = None, **options):
        self.schema = schema
        self._build_reference = reference or functools.partial(_draft202012, schema)
        self._options = options

    @functools.cached_property
    def reference(self):
        """The python-jsonschema validator (imported on first use)."""
        return self._build_reference()

    @functools.cached_property
    def _compiled(self):
        import jsonschema_rs

        try:
            return jsonschema_rs.validator_for(self.schema, **self._options)
        except (ValueError, jsonschema_rs.ReferencingError):
            return None  # the reference validator reports what is wrong with the schema

    def _valid(self, instance: Any) -> bool:
        if self._compiled is None:
            return False
        try:
            return self._compiled.is_valid(instance)
        except ValueError:  # not JSON data (non-string keys, dates, bytes): the reference decides
            return False

    def errors(self, instance: Any) -> list:
        """The reference validator's errors for ``instance``; empty when it is valid."""
        if self._valid(instance):
            return []
        return list(self.reference.iter_errors(instance))
