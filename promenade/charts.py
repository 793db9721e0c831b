"""Helm charts: assembling them for the genesis payload, and what their anchors place.

The chart sources live in ``charts/``. The anchor programs have one source, in
``promenade/anchor/``; a chart names the ones it runs in its ``Chart.yaml`` annotation
``promenade.airshipit.org/anchor-programs`` and :func:`chart_sources` adds them under
``files/``, with the shared library chart ``anchor-lib`` under ``charts/`` (where Helm looks
for dependencies). The result is a complete chart that ``helm template`` renders as is.

:func:`placed_files` renders, through the anchor's own code, every file an anchor would
place on a host for given chart values; the tests validate those manifests.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from functools import lru_cache
from types import ModuleType

import yaml

from .fileio import atomic_write

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHARTS_DIR = os.path.join(REPO_DIR, "charts")
ANCHOR_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "anchor")
PROGRAMS_ANNOTATION = "promenade.airshipit.org/anchor-programs"
LIBRARY_TYPE = "library"


def chart_names(charts_dir: str = CHARTS_DIR) -> list[str]:
    """The application charts (directories with a ``Chart.yaml`` that are not libraries)."""
    return sorted(
        name for name in os.listdir(charts_dir)
        if os.path.isfile(os.path.join(charts_dir, name, "Chart.yaml"))
        and chart_metadata(os.path.join(charts_dir, name)).get("type") != LIBRARY_TYPE
    )


def chart_metadata(chart_dir: str) -> dict:
    """The parsed ``Chart.yaml``."""
    with open(os.path.join(chart_dir, "Chart.yaml"), encoding="utf-8") as handle:
        return yaml.safe_load(handle) or {}


def anchor_programs(chart_dir: str) -> list[str]:
    """The anchor programs a chart runs (file names in ``promenade/anchor/``)."""
    return (chart_metadata(chart_dir).get("annotations") or {}).get(PROGRAMS_ANNOTATION, "").split()


def _tree(directory: str, prefix: str) -> dict[str, str]:
    files = {}
    for base, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(names):
            path = os.path.join(base, name)
            files[os.path.join(prefix, os.path.relpath(path, directory))] = path
    return files


def chart_sources(name: str, charts_dir: str = CHARTS_DIR) -> dict[str, str]:
    """Every file of the assembled chart ``name``: relative path -> source file."""
    chart_dir = os.path.join(charts_dir, name)
    files = _tree(chart_dir, "")
    for program in anchor_programs(chart_dir):
        files[os.path.join("files", program)] = os.path.join(ANCHOR_DIR, program)
    for dependency in chart_metadata(chart_dir).get("dependencies") or []:
        repository = dependency.get("repository", "")
        if repository.startswith("file://"):
            source = os.path.normpath(os.path.join(chart_dir, repository[len("file://"):]))
            files.update(_tree(source, os.path.join("charts", dependency["name"])))
    return files


def assembled_sources(charts_dir: str = CHARTS_DIR) -> dict[str, str]:
    """Every file of every assembled chart: ``<chart>/<relative path>`` -> source file. This is
    what the genesis payload carries under ``/etc/genesis/armada/assets/charts/``."""
    return {os.path.join(name, relative): source
            for name in chart_names(charts_dir) for relative, source in chart_sources(name, charts_dir).items()}


def file_mode(relative: str) -> int:
    """Mode of an assembled chart file: the anchor programs are executable."""
    return 0o755 if os.path.dirname(relative).endswith("files") and relative.endswith(".py") else 0o644


def bundle(out_dir: str, charts_dir: str = CHARTS_DIR) -> list[str]:
    """Write every assembled chart under ``out_dir/<chart>/``; return the paths written."""
    written = []
    for relative, source in assembled_sources(charts_dir).items():
        with open(source, "rb") as handle:
            data = handle.read()
        path = os.path.join(out_dir, relative)
        if atomic_write(path, data, file_mode(relative)):
            written.append(path)
    return written


def default_values(name: str, charts_dir: str = CHARTS_DIR) -> dict:
    """The chart's ``values.yaml``."""
    with open(os.path.join(charts_dir, name, "values.yaml"), encoding="utf-8") as handle:
        return yaml.safe_load(handle) or {}


def merge_values(base: dict, override: dict) -> dict:
    """Helm's value merge: mappings merge recursively, anything else replaces."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_values(merged[key], value)
        else:
            merged[key] = value
    return merged


@lru_cache(maxsize=None)
def anchor_module(program: str = "anchor.py") -> ModuleType:
    """Load an anchor program from ``promenade/anchor/`` as a module (they are standalone scripts)."""
    name = os.path.splitext(program)[0]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, os.path.join(ANCHOR_DIR, program))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def placed_files(name: str, values: dict, variables: dict, charts_dir: str = CHARTS_DIR) -> dict[str, str]:
    """What chart ``name``'s anchor places for ``values`` and context ``variables``
    (``{"node": {...}}``; for the etcd chart also ``etcd``, the keyword arguments of
    ``etcd_anchor.render_manifest``): host path -> text.

    Templates the chart renders with Helm (not in ``files/``) are left out."""
    anchor = anchor_module()
    templates = os.path.join(charts_dir, name, "files")
    context = anchor.build_context(values, variables)
    placed = {}
    for spec in anchor.file_specs(values):
        if "template" in spec and not os.path.exists(os.path.join(templates, spec["template"])):
            continue
        placed[anchor.render(spec["path"], context)] = anchor.content_for(spec, context, templates).decode()
    if "etcd_anchor.py" in anchor_programs(os.path.join(charts_dir, name)):
        settings = values["anchor"]
        manifest = anchor_module("etcd_anchor.py").render_manifest(
            os.path.join(templates, settings["manifest_template"]), anchor.build_context(values, variables),
            **variables["etcd"])
        placed[settings["manifest_path"]] = manifest.decode()
    return placed
