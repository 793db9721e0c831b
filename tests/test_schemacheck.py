"""The two-step schema check: jsonschema-rs decides, python-jsonschema explains and has the last word."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from sitefixtures import SITE, embedded_site

from promenade.schemacheck import SchemaCheck
from promenade.validation import BUILTIN_SCHEMAS, builtin_check

WRONG_VALUES = (None, 7, -1, 2.5, True, "", "a b", "10.0.0.1", "10.0.0.0/8", "300.1.1.1", [], ["x"], {}, {"k": 1})


def _leaf_paths(node, path=()):
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from _leaf_paths(value, path + (key,))
    elif isinstance(node, list) and node:
        for index, value in enumerate(node):
            yield from _leaf_paths(value, path + (index,))
    else:
        yield path


def _replaced(node, path, value):
    if not path:
        return value
    copy = dict(node) if isinstance(node, dict) else list(node)
    copy[path[0]] = _replaced(node[path[0]], path[1:], value)
    return copy


def test_both_steps_agree_on_every_builtin_document_of_the_site_and_its_mutations():
    checked = 0
    for doc in embedded_site():
        if doc.schema not in BUILTIN_SCHEMAS:
            continue
        check = builtin_check(doc.schema)
        candidates = [doc.data] + [_replaced(doc.data, path, value)
                                   for path in _leaf_paths(doc.data) for value in WRONG_VALUES]
        for data in candidates:
            compiled = check._valid(data)
            reference = not list(check.reference.iter_errors(data))
            assert compiled == reference, f"{doc.schema} {doc.name}: {json.dumps(data)[:300]}"
            checked += 1
    assert checked > 1000


def test_the_reference_has_the_last_word():
    # jsonschema-rs cannot take non-string keys and rejects NaN; python-jsonschema accepts both
    assert SchemaCheck({"type": "object"}).errors({1: 2}) == []
    assert SchemaCheck({"type": "number"}).errors(float("nan")) == []
    errors = SchemaCheck({"type": "object", "required": ["a"]}).errors({1: 2})
    assert [error.message for error in errors] == ["'a' is a required property"]


def test_a_schema_the_compiled_validator_cannot_load_is_left_to_the_reference():
    check = SchemaCheck({"$ref": "elsewhere.yaml"}, retriever=lambda uri: (_ for _ in ()).throw(ValueError(uri)))
    assert check._compiled is None
    check = SchemaCheck({"type": "string", "minLength": 2})
    assert check.errors("ab") == [] and len(check.errors("a")) == 1


PROBE = """
import json, sys
from promenade.documents import load_files, site_files
from promenade.rendering import render
from promenade.validation import validate
docs = render(load_files(site_files(sys.argv[1])), strict=False).documents
print(json.dumps({"problems": [str(p) for p in validate(docs)],
                  "jsonschema": sorted(m for m in sys.modules if m.split(".")[0] in ("jsonschema", "referencing"))}))
"""


def _probe(site: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE, site], capture_output=True, text=True, timeout=120, check=True,
                          env=dict(os.environ, PYTHONPATH=os.path.dirname(SITE)))
    return json.loads(proc.stdout)


def test_a_valid_site_never_imports_python_jsonschema():
    result = _probe(SITE)
    assert result == {"problems": [], "jsonschema": []}


def test_an_invalid_document_is_explained_by_python_jsonschema(tmp_path):
    site = shutil.copytree(SITE, tmp_path / "site")
    network = site / "global" / "kubernetes-network.yaml"
    network.write_text(network.read_text().replace("service_cidr: 10.96.0.0/16", "service_cidr: 10.96.0.1/16"))
    result = _probe(str(site))
    (problem,) = result["problems"]
    assert problem.startswith(f"{site}/") and problem.endswith(
        "[promenade/KubernetesNetwork/v1 kubernetes-network] at .data.kubernetes.service_cidr: "
        "expected a CIDR network such as 10.96.0.0/16 (no host bits set), got '10.96.0.1/16'")
    assert "jsonschema" in result["jsonschema"]
