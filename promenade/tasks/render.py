"""Task family: render and validate the site.

* ``render``: the site alone, lenient (certificates may not exist yet) → ``state/site/``.
* ``render_final``: the site plus ``certificates.yaml``, strict → ``state/rendered/``,
  which every per-node task reads. Its inputs are the site files and ``certificates.yaml``,
  which ``certs_uptodate`` (in the certs family) keeps current.
* ``validate``: render + validate in memory and print a one-line summary; writes nothing.
"""

from __future__ import annotations

import json
import os

from .. import store
from ..documents import Document, check_envelopes, load_files, site_files
from ..errors import PromenadeError
from ..fileio import SECRET_MODE, atomic_write
from ..parsecache import ParseCache
from .options import out_dir, site_dir, state_dir
from .reporting import user_errors

SITE_STORE = ("site",)
RENDERED_STORE = ("rendered",)
PARSED = ("parsed",)


def certificates_file() -> str:
    """``<out>/certificates.yaml``, written by the certs family."""
    return os.path.join(out_dir(), "certificates.yaml")


_caches: dict[str, ParseCache] = {}  # cache directory -> its cache (one per output directory)


def _load_files(paths: list[str]) -> list[Document]:
    """:func:`load_files` through the parse cache of ``state/parsed/``: an unchanged file is
    parsed once, then read back as JSON (``render`` and ``render_final`` read the same files)."""
    directory = state_dir(*PARSED)
    cache = _caches.setdefault(directory, ParseCache(directory))
    cache.prune(sorted(set(paths) | {certificates_file()}))
    return load_files(paths, cache.read)


def render_and_validate(paths: list[str], strict: bool):
    """Load, render and validate documents from ``paths``; raise every problem at once."""
    return _render_valid(load_files(paths), strict)


def _render_valid(docs: list[Document], strict: bool, valid_keys: set[str] | None = None):
    from ..rendering import render  # imported here: a no-op build never renders
    from ..validation import validate

    problems = check_envelopes(docs)
    if problems:
        raise PromenadeError(problems)
    result = render(docs, strict=strict)
    problems = validate(result.documents, valid_keys)
    if problems:
        raise PromenadeError(problems)
    return result


_written: dict[str, list[Document]] = {}  # store directory -> its documents, as this process wrote or read them

VALID_FILE = "valid.json"


def _remembered_validity() -> None:
    """Load what both stores' last renders found valid (see :func:`validation.remember_valid`)."""
    from ..validation import remember_valid

    for store_dir in (state_dir(*SITE_STORE), state_dir(*RENDERED_STORE)):
        try:
            with open(os.path.join(store_dir, VALID_FILE), encoding="utf-8") as handle:
                remember_valid(json.load(handle))
        except (OSError, ValueError):
            continue


@user_errors
def _render_store(paths: list[str], strict: bool, target: str) -> None:
    _remembered_validity()
    valid_keys: set[str] = set()
    docs = _render_valid(_load_files(paths), strict, valid_keys).documents
    _written[target] = store.write_store(target, docs)
    atomic_write(os.path.join(target, VALID_FILE), json.dumps(sorted(valid_keys)) + "\n", SECRET_MODE)


def store_documents(store_dir: str) -> list[Document]:
    """The documents of a store in rendered order, as :func:`store.load_documents` gives them.

    When this process rendered the store, they come from memory instead of being parsed back.
    """
    if store_dir not in _written:
        _written[store_dir] = store.load_documents(store_dir)
    return _written[store_dir]


def _awaits_certificates(warning) -> bool:
    """A lenient-mode warning about a substitution whose source ``doit certs`` will generate."""
    from ..pki import PKI_SCHEMAS  # the action's import: keeps `doit list` light

    return "substitution source" in warning.message and any(
        f"source {schema} " in warning.message for schema in PKI_SCHEMAS)


@user_errors
def _validate(site: str, paths: list[str]) -> None:
    certificates = certificates_file()
    with_certificates = os.path.exists(certificates)
    result = render_and_validate(paths + [certificates] if with_certificates else paths, strict=False)
    waiting = [w for w in result.warnings if not with_certificates and _awaits_certificates(w)]
    others = [w for w in result.warnings if w not in waiting]
    for warning in others:
        print(warning)
    notes = [f"{len(others)} warning{'s' if len(others) != 1 else ''}"]
    if with_certificates:
        notes.append(f"with {certificates}")
    elif waiting:
        notes.append(f"{len(waiting)} substitutions wait for certificates: run `doit certs`")
    print(f"{site}: {len(paths)} files, {len(result.documents)} rendered documents, valid ({'; '.join(notes)})")


@user_errors
def _report(error: PromenadeError) -> None:
    raise error


def _site_files_or_failure():
    """The site's YAML files, or a task action that reports why there are none."""
    try:
        files = site_files(site_dir())
    except PromenadeError as exc:
        return None, exc
    if not files:
        return None, PromenadeError(f"{site_dir()}: no *.yaml or *.yml files found")
    return files, None


def _site_task(build) -> dict:
    """The task ``build(files)`` makes from the site's files, or a failing task that reports why
    the site cannot be read."""
    files, error = _site_files_or_failure()
    if error:
        return {"actions": [(_report, [error])], "uptodate": [False]}
    return build(files)


def _store_task(inputs: list[str], strict: bool, target: str) -> dict:
    return {
        "actions": [(_render_store, [inputs, strict, target])],
        "file_dep": inputs,
        "targets": [store.index_path(target), os.path.join(target, store.DOCUMENTS)],
        "clean": True,
    }


def render_task() -> dict:
    """``render``: the site alone, lenient."""
    return _site_task(lambda files: _store_task(files, False, state_dir(*SITE_STORE)))


def file_signature(path: str) -> str | None:
    """Modification time, size and inode of ``path`` (None if missing): every write is a rename."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return f"{info.st_mtime_ns}:{info.st_size}:{info.st_ino}"


def certificates_unchanged(task, values, path: str) -> bool:
    """uptodate check: ``path`` is the file the last successful run read (a new file is a new
    inode: every write is a rename). Not a ``file_dep``: that would make every certificate task
    a dependency to check on each run."""
    task.value_savers.append(lambda: {"certificates": file_signature(path)})
    current = file_signature(path)
    return current is not None and values.get("certificates") == current


def render_final_task() -> dict:
    """``render_final``: the site with its certificates, strict."""
    def build(files):
        task = _store_task(files + [certificates_file()], True, state_dir(*RENDERED_STORE))
        task["file_dep"] = files
        task["uptodate"] = [(certificates_unchanged, [certificates_file()])]
        task["task_dep"] = ["certs_uptodate"]
        return task
    return _site_task(build)


def validate_task() -> dict:
    """``validate``: render and validate in memory, report."""
    return _site_task(lambda files: {
        "actions": [(_validate, [site_dir(), files])], "uptodate": [False], "verbosity": 2})
