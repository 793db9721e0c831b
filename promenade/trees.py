"""Role file trees: the files a script places on a node, rendered from ``templates/roles``.

``templates/roles/<role>/`` mirrors the node's filesystem. Files ending in ``.j2`` are Jinja2
templates (``StrictUndefined``, trailing newlines kept, no autoescape) rendered with ``config``
(the node's :class:`~promenade.config.SiteConfig` view) and ``node`` (its
:class:`~promenade.config.Host`); other files are copied. A template that renders
to nothing but whitespace is not placed (e.g. proxy settings on a site without a proxy).
Modes come from ``templates/roles/modes.yaml`` (first matching glob wins). The genesis tree
also carries every file of ``charts/`` under ``/etc/genesis/armada/assets/charts/`` for the
bootstrap Armada (mode 0755 if executable in the checkout, else 0644).

HostSystem and Genesis ``files:`` entries with ``content`` or ``symlink`` are turned into
entries by :func:`host_files`; ``url`` / ``tar_url`` entries are downloads, which the script
engine (``promenade.engine`` with ``promenade.downloads``) resolves.
"""

from __future__ import annotations

import copy
import fnmatch
import functools
import json
import os
import shlex
from dataclasses import dataclass

import jinja2

from . import charts
from .config import GENESIS, HOST_SYSTEM, SiteConfig
from .errors import Problem, PromenadeError
from .rendering import _deep_merge
from .yamlio import dump_yaml, load_yaml

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATES_DIR = os.path.join(REPO_DIR, "templates")
ROLES_DIR = os.path.join(TEMPLATES_DIR, "roles")
CHARTS_TARGET = "/etc/genesis/armada/assets/charts"
MODES_FILE = os.path.join(ROLES_DIR, "modes.yaml")
ROLES = ("common", "genesis", "join")
TEMPLATE_SUFFIX = ".j2"


@dataclass(frozen=True)
class FileEntry:
    """One file (or symlink) placed on a node: absolute path, mode and content."""

    path: str
    mode: int
    data: bytes | None = None
    symlink: str | None = None


def _merged(base: dict, override: dict) -> dict:
    """``override`` merged into a copy of ``base`` with the layering ``merge`` semantics."""
    merged = copy.deepcopy(base)
    _deep_merge(merged, override)
    return merged


_dumped: dict[tuple[str, bool], str] = {}  # (repr of a value, many) -> its YAML
DUMP_MEMO_SIZE = 512


def _memo_yaml(data, many: bool = False) -> str:
    """:func:`dump_yaml`, remembered: most nodes put the same manifests into their trees.

    ``repr`` tells types apart (``1`` / ``'1'``, dates), so equal keys mean equal YAML.
    """
    key = (repr(data), many)
    text = _dumped.get(key)
    if text is None:
        if len(_dumped) >= DUMP_MEMO_SIZE:
            _dumped.clear()
        text = _dumped[key] = dump_yaml(data, many=many)
    return text


def _toyaml_all(docs: list) -> str:
    return _memo_yaml(docs, many=True) if docs else ""


@functools.lru_cache(maxsize=None)
def compiled_templates() -> jinja2.BytecodeCache | None:
    """Jinja's per-user cache of compiled templates (a private directory under the temporary
    directory, checked by Jinja): every build process loads the templates instead of compiling
    them. Entries are keyed by each template source's checksum. None where it cannot be made."""
    try:
        return jinja2.FileSystemBytecodeCache()
    except (OSError, RuntimeError):
        return None


@functools.lru_cache(maxsize=None)
def environment() -> jinja2.Environment:
    """The Jinja2 environment every role template is rendered with."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
        auto_reload=False,
        bytecode_cache=compiled_templates(),
    )
    env.filters.update(
        toyaml=_memo_yaml,
        toyaml_all=_toyaml_all,
        json=lambda value, indent=2: json.dumps(value, indent=indent, sort_keys=True),
        shquote=lambda value: shlex.quote(str(value)),
        merge=_merged,
    )
    return env


@functools.lru_cache(maxsize=None)
def _modes() -> tuple[tuple[str, int], ...]:
    with open(MODES_FILE, encoding="utf-8") as handle:
        rules = load_yaml(handle.read())
    return tuple((rule["glob"], int(rule["mode"])) for rule in rules)


@functools.lru_cache(maxsize=4096)
def mode_for(path: str) -> int:
    """Mode of a placed file: the first rule of ``modes.yaml`` whose glob matches ``path``."""
    for pattern, mode in _modes():
        if fnmatch.fnmatchcase(path, pattern):
            return mode
    raise PromenadeError(Problem(f"no rule in {MODES_FILE} matches {path}; add a catch-all '*'",
                                 file=MODES_FILE))


def _walk(root: str) -> list[str]:
    """Files below ``root`` (hidden directories skipped; none if it is missing), relative to it, sorted."""
    found = []
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(os.path.relpath(os.path.join(directory, name), root) for name in files)
    return sorted(found)


@functools.lru_cache(maxsize=None)
def role_templates(role: str) -> tuple[str, ...]:
    """Template files of ``role``, relative to ``templates/roles``, sorted."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    return tuple(f"{role}/{path}" for path in _walk(os.path.join(ROLES_DIR, role)))


@functools.lru_cache(maxsize=None)
def chart_files() -> tuple[FileEntry, ...]:
    """The charts of ``charts/`` as placed on the genesis node."""
    entries = []
    for relative, source in sorted(charts.assembled_sources().items()):
        with open(source, "rb") as handle:
            data = handle.read()
        entries.append(FileEntry(f"{CHARTS_TARGET}/{relative}", charts.file_mode(relative), data))
    return tuple(entries)


def input_files() -> list[str]:
    """Every file the role trees are built from (templates, modes.yaml, charts), for ``file_dep``."""
    return [os.path.join(ROLES_DIR, path) for path in _walk(ROLES_DIR)] + \
        sorted(set(charts.assembled_sources().values()))


def _node_path(template: str) -> str:
    """``common/etc/hosts.j2`` -> ``/etc/hosts``."""
    path = template.split("/", 1)[1]
    return "/" + (path[: -len(TEMPLATE_SUFFIX)] if path.endswith(TEMPLATE_SUFFIX) else path)


@functools.lru_cache(maxsize=None)
def _static(template: str) -> bytes:
    with open(os.path.join(ROLES_DIR, template), "rb") as handle:
        return handle.read()


def _render(template: str, context: dict) -> bytes | None:
    """Bytes of one role file, or None if the template renders to nothing."""
    if not template.endswith(TEMPLATE_SUFFIX):
        return _static(template)
    source = os.path.join("templates", "roles", template)
    try:
        text = environment().get_template(f"roles/{template}").render(context)
    except PromenadeError as exc:
        raise PromenadeError([Problem(f"{p.message} (needed by template {source})", p.file, p.line,
                                      p.schema, p.name, p.path) for p in exc.problems]) from None
    except jinja2.UndefinedError as exc:
        raise PromenadeError(Problem(f"template needs an undefined value: {exc.message}",
                                     file=source)) from None
    except jinja2.TemplateSyntaxError as exc:
        raise PromenadeError(Problem(f"template syntax error: {exc.message}", file=source,
                                     line=exc.lineno)) from None
    return text.encode("utf-8") if text.strip() else None


def view(config: SiteConfig, node: str | None) -> SiteConfig:
    """The config a script is built from: genesis (``node`` None) or one KubernetesNode."""
    return config.for_genesis() if node is None else config.for_node(node)


def _role_entries(site: SiteConfig, role: str) -> list[FileEntry]:
    context = {"config": site, "node": site.host}
    entries = []
    for template in role_templates(role):
        data = _render(template, context)
        if data is not None:
            path = _node_path(template)
            entries.append(FileEntry(path, mode_for(path), data))
    return entries


def render_role_files(config: SiteConfig, role: str, node: str | None) -> list[FileEntry]:
    """Files of one role for the genesis node (``node`` None) or KubernetesNode ``node``."""
    if role == "genesis" and node is not None:
        raise ValueError("the genesis role is only built for the genesis node")
    if role == "join" and node is None:
        raise ValueError("the join role needs a node name")
    return _role_entries(view(config, node), role)


def node_files(config: SiteConfig, node: str | None) -> list[FileEntry]:
    """The common role plus the genesis (``node`` None, with the charts) or join role, sorted by path.

    A role file overrides a common file with the same path.
    """
    site = view(config, node)
    merged = {entry.path: entry for entry in _role_entries(site, "common")}
    merged.update((entry.path, entry) for entry in _role_entries(site, "genesis" if node is None else "join"))
    if node is None:
        merged.update((entry.path, entry) for entry in chart_files())
    return [merged[path] for path in sorted(merged)]


def host_files(config: SiteConfig, role: str) -> list[FileEntry]:
    """``content`` and ``symlink`` entries of HostSystem ``files`` (and Genesis ``files`` for genesis).

    ``url`` / ``tar_url`` entries are downloads and not returned here.
    """
    sources = [config.document(HOST_SYSTEM)]
    if role == "genesis":
        sources.append(config.document(GENESIS))
    entries = []
    for doc in sources:
        for index, spec in enumerate(config.value(doc, "files", [])):
            where = ["data", "files", index]
            if not isinstance(spec, dict) or not str(spec.get("path", "")).startswith("/"):
                raise PromenadeError(doc.problem("a file needs an absolute path", where + ["path"]))
            if "mode" not in spec:
                raise PromenadeError(doc.problem("a file needs a mode", where + ["mode"]))
            if spec.get("content") is not None:
                entries.append(FileEntry(spec["path"], int(spec["mode"]), str(spec["content"]).encode()))
            elif spec.get("symlink") is not None:
                entries.append(FileEntry(spec["path"], int(spec["mode"]), symlink=str(spec["symlink"])))
    return entries
