"""The Helm chart charts/promenade: values against values.schema.json, manifests against Kubernetes schemas."""

from __future__ import annotations

import copy
import json
import os
import re

import jsonschema
import kubernetes_validate
import pytest
import yaml

from doitrun import ROOT

CHART = os.path.join(ROOT, "charts", "promenade")
KUBERNETES = "1.30.0"


def load_yaml(*parts):
    with open(os.path.join(CHART, *parts)) as handle:
        return yaml.safe_load(handle)


@pytest.fixture(scope="module")
def validator():
    with open(os.path.join(CHART, "values.schema.json")) as handle:
        schema = json.load(handle)
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_default_values_are_valid(validator):
    validator.validate(load_yaml("values.yaml"))


def with_value(values, dotted, value):
    changed = copy.deepcopy(values)
    *parents, last = dotted.split(".")
    target = changed
    for key in parents:
        target = target[key]
    target[last] = value
    return changed


@pytest.mark.parametrize("dotted, value", [
    ("replicas", 0), ("replicas", "2"), ("server.port", 80), ("server.workers", 0), ("server.insecure", "no"),
    ("server.blobUrl", "ftp://x"), ("image.pullPolicy", "Sometimes"), ("service.type", "ExternalName"),
    ("build.claimName", ""), ("build.claimName", "Bad_Name"), ("cacheSizeLimit", "1GB"),
    ("tls", {"enabled": True, "secretName": ""}), ("unknown", 1), ("server.extra", True),
])
def test_invalid_values_are_rejected(validator, dotted, value):
    values = with_value(load_yaml("values.yaml"), dotted, value)
    assert list(validator.iter_errors(values)), f"{dotted}={value!r} was accepted"


def test_tls_with_secret_is_accepted(validator):
    validator.validate(with_value(load_yaml("values.yaml"), "tls", {"enabled": True, "secretName": "promenade-tls"}))


def value_paths(data, prefix=""):
    paths = set()
    if isinstance(data, dict):
        for key, value in data.items():
            path = f"{prefix}.{key}" if prefix else key
            paths.add(path)
            paths |= value_paths(value, path)
    return paths


def templates():
    folder = os.path.join(CHART, "templates")
    return {name: open(os.path.join(folder, name)).read() for name in sorted(os.listdir(folder))}


def test_templates_use_only_defined_values():
    defined = value_paths(load_yaml("values.yaml"))
    used = {match for text in templates().values() for match in re.findall(r"\.Values\.([A-Za-z0-9_.]+)", text)}
    assert used and used <= defined, sorted(used - defined)
    assert {path.split(".")[0] for path in used} == set(load_yaml("values.yaml")), "values without a use"


def unconditional_static_lines(text):
    """Lines without template actions that render whatever the values are."""
    depth, lines = 0, []
    for line in text.splitlines():
        action = re.match(r"\s*\{\{-?\s*(if|with|range|end|define)\b", line)
        if action:
            depth += -1 if action.group(1) == "end" else 1
        elif depth == 0 and "{{" not in line and line.strip():
            lines.append(line)
    return lines


def test_hand_rendered_defaults_match_templates_and_kubernetes_schemas():
    with open(os.path.join(CHART, "rendered", "defaults.yaml")) as handle:
        rendered_text = handle.read()
    rendered_lines = set(rendered_text.splitlines())
    for name, text in templates().items():
        missing = [line for line in unconditional_static_lines(text) if line not in rendered_lines]
        assert not missing, f"{name}: lines not in rendered/defaults.yaml: {missing}"
    manifests = [doc for doc in yaml.safe_load_all(rendered_text) if doc]
    assert sorted(doc["kind"] for doc in manifests) == ["Deployment", "Service"]
    for manifest in manifests:
        kubernetes_validate.validate(manifest, KUBERNETES, strict=True)
    values = load_yaml("values.yaml")
    deployment = next(doc for doc in manifests if doc["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert deployment["spec"]["replicas"] == values["replicas"]
    assert container["image"] == f"{values['image']['repository']}:{values['image']['tag']}"
    assert f"--port={values['server']['port']}" in container["args"]
    assert container["resources"] == values["resources"]
    assert "--insecure" not in container["args"]


def test_broken_manifest_is_caught_by_kubernetes_schemas():
    deployment = next(doc for doc in yaml.safe_load_all(open(os.path.join(CHART, "rendered", "defaults.yaml")))
                      if doc and doc["kind"] == "Deployment")
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)
