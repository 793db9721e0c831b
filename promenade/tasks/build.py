"""Task family: the scripts (``doit build``, the default task).

* ``build_plan`` (after ``render_final``): splits the rendered store into what every script
  shares and what each KubernetesNode owns (its own document and the certificates named after
  its hostname, e.g. ``kubelet-<host>``) and decides which ``build_node`` task builds which
  node. Writes ``state/build/plan.json``, ``state/build/common.stamp`` (a digest of the shared
  documents, templates and engine code) and ``state/build/groups/<task>.sha256`` (a digest of
  the documents of that task's nodes), each rewritten only when it changes.
* ``build_shared:<role>``: the shared payload (HostSystem ``files``, downloads included),
  compressed once per run and encrypted as the role's policy says, into
  ``state/build/shared-<role>.payload`` with its sha256 in ``shared-<role>.sha256``; every
  script of that role reuses it and depends on the small digest file, not on the payload.
* ``build_genesis``: ``genesis.sh`` and ``validate-genesis.sh``.
* ``build_node:<name>``: ``join-<name>.sh`` and ``validate-<name>.sh``; its ``file_dep`` is the
  common stamp, the shared payload's digest and its group stamp, so editing one node rebuilds
  only that node. A node whose scripts cannot be built loses its old ones. Sites with more
  than :data:`BATCH_ABOVE` nodes get ``build_node:batch-<k>of<n>`` tasks instead, each for the
  nodes whose name hashes to batch ``k`` of :data:`BATCHES` (``batches=N`` chooses, 0 means one
  task per node): doit's fixed cost per task, not the work, dominates a no-op run of thousands
  of tasks. A task rebuilds only its nodes whose documents changed since they were last built
  (``groups/<task>.built.json``), all of them when a shared input changed.
* ``build_cluster``: ``validate-cluster.sh``.
* ``build_prune``: removes the scripts of nodes that left the site (runs only when the set of
  nodes changes).

``blob_url=URL`` switches join scripts to by-reference mode: they carry only their node payload
and fetch the shared payload from ``URL/<sha256>`` (published as ``<out>/blobs/<sha256>``).
:class:`BuildReporter` prints compact progress and a summary instead of one line per task.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import hashlib
import json
import os
import time
import zlib

from doit import get_var
from doit.reporter import ConsoleReporter
from doit.tools import config_changed

from .. import store
from ..config import (CERTIFICATE, CERTIFICATE_KEY, ENCRYPTION_KEY_VARIABLE, ENCRYPTION_POLICY, HOST_SYSTEM,
                      NODE, SiteConfig)
from ..errors import PromenadeError
from ..fileio import SECRET_MODE, atomic_link, atomic_write, remove_quietly
from .options import out_dir, state_dir
from .render import RENDERED_STORE, file_signature, store_documents
from .reporting import user_errors

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATES_DIR = os.path.join(os.path.dirname(PACKAGE_DIR), "templates")  # promenade.trees.TEMPLATES_DIR
ENGINE_SOURCES = [os.path.join(PACKAGE_DIR, name)
                  for name in ("engine.py", "bundles.py", "downloads.py", "trees.py", "config.py")]
NODE_OWNED_SCHEMAS = (CERTIFICATE, CERTIFICATE_KEY)
SHARED_SCHEMAS = (HOST_SYSTEM, ENCRYPTION_POLICY)  # what the shared payloads are made from
ROLES = ("genesis", "join")
BATCH_ABOVE = 100
BATCHES = 16


def rendered_dir() -> str:
    return state_dir(*RENDERED_STORE)


def build_dir(*parts: str) -> str:
    return state_dir("build", *parts)


def plan_path() -> str:
    return build_dir("plan.json")


def stamp_path() -> str:
    return build_dir("common.stamp")


def group_stamp(group: str) -> str:
    """The digest of the documents of the nodes one ``build_node`` task builds."""
    return build_dir("groups", f"{group}.sha256")


def shared_path(role: str) -> str:
    return build_dir(f"shared-{role}.payload")


def shared_digest_path(role: str) -> str:
    """The sha256 of the shared payload: scripts depend on it, so doit never hashes 100 MB per task."""
    return build_dir(f"shared-{role}.sha256")


def script_path(name: str) -> str:
    return os.path.join(out_dir(), name)


def template_files() -> list[str]:
    """Every role and script template (they shape every script); hidden files excepted."""
    found = []
    for folder, dirs, files in os.walk(TEMPLATES_DIR):
        dirs[:] = [name for name in dirs if not name.startswith(".")]
        found += [os.path.join(folder, name) for name in files if not name.startswith(".")]
    return sorted(found)


def _engine():
    """:mod:`promenade.engine`, imported by the actions only: a no-op build never loads jinja2."""
    from .. import engine

    return engine


def blob_url() -> str | None:
    return get_var("blob_url", None) or None


def workspace():
    return _engine().Workspace(out_dir(), blob_url=blob_url())


@functools.lru_cache(maxsize=None)
def key_fingerprint() -> str:
    """A slow one-way fingerprint of ``PROMENADE_ENCRYPTION_KEY`` (empty without one).

    Part of the stamps, so a new key re-encrypts every payload; scrypt keeps the stored value
    useless for guessing the passphrase.
    """
    key = os.environ.get(ENCRYPTION_KEY_VARIABLE, "")
    if not key:
        return ""
    return hashlib.scrypt(key.encode("utf-8"), salt=b"promenade build key", n=1 << 14, r=8, p=1, dklen=16).hex()


def owners_of(name: str, by_hostname: dict[str, str]) -> list[str]:
    """Nodes whose hostname appears in a certificate name after a dash (``kubelet-<host>``, ``…-<host>-peer``)."""
    parts = name.split("-")
    found = []
    for start in range(1, len(parts)):
        for end in range(start + 1, len(parts) + 1):
            node = by_hostname.get("-".join(parts[start:end]))
            if node is not None:
                found.append(node)
    return found


# --- actions ------------------------------------------------------------------------------------
def group_of(name: str, batches: int) -> str:
    """The ``build_node`` task that builds node ``name``: its own, or its batch."""
    return f"batch-{zlib.crc32(name.encode()) % batches:02d}of{batches}" if batches else name


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


@user_errors
def make_plan(store_dir: str, extra_inputs: list[str]) -> None:
    """Write plan.json (who owns which document, which task builds which node), the common
    stamp and one stamp per ``build_node`` task (a digest of its nodes' documents)."""
    index = store.read_index(store_dir)
    nodes = [doc for doc in store_documents(store_dir) if doc.schema == NODE]
    by_hostname = {str(doc.data.get("hostname") or doc.name): doc.name for doc in nodes}
    plan = {"nodes": {doc.name: [] for doc in nodes}, "common": [], "groups": {}, "digests": {},
            "shared": sorted({entry["schema"] for entry in index} & set(SHARED_SCHEMAS))}
    for position, entry in enumerate(index):
        owners = []
        if entry["schema"] == NODE:
            owners = [entry["name"]]
        elif entry["schema"] in NODE_OWNED_SCHEMAS:
            owners = sorted(set(owners_of(entry["name"], by_hostname)))
        for owner in owners:
            plan["nodes"][owner].append(position)
        if not owners:
            plan["common"].append(position)
    batches = batch_count(len(nodes))
    for name, positions in plan["nodes"].items():
        plan["digests"][name] = _digest([name, [index[position]["sha256"] for position in positions]])
        plan["groups"].setdefault(group_of(name, batches), []).append(name)
    digest = hashlib.sha256()
    for path in extra_inputs:
        with open(path, "rb") as handle:
            digest.update(path.encode() + b"\0" + hashlib.sha256(handle.read()).digest())
    digest.update(json.dumps([[index[position]["sha256"] for position in plan["common"]],
                              blob_url(), key_fingerprint()]).encode())
    atomic_write(stamp_path(), digest.hexdigest() + "\n")
    wanted = set()
    for group, names in plan["groups"].items():
        wanted.add(group_stamp(group))
        atomic_write(group_stamp(group), _digest({name: plan["digests"][name] for name in names}) + "\n")
    for path in glob.glob(build_dir("groups", "*.sha256")):
        if path not in wanted:
            remove_quietly(path)
            remove_quietly(_built_path(path))
    atomic_write(plan_path(), json.dumps(plan, indent=1, sort_keys=True) + "\n")


def _view_documents(store_dir: str, positions: list[int]) -> list:
    docs = store_documents(store_dir)
    return [docs[position] for position in sorted(positions)]


@user_errors
def make_shared(store_dir: str, role: str, target: str) -> None:
    """Build the shared payload of ``role`` from the HostSystem and EncryptionPolicy documents."""
    docs = [doc for doc in store_documents(store_dir) if doc.schema in SHARED_SCHEMAS]
    payload = _engine().shared_payload(SiteConfig(docs), role, workspace())
    digest = hashlib.sha256(payload).hexdigest()
    twins = [other for other in ROLES if other != role and os.path.exists(shared_path(other))
             and os.path.exists(shared_digest_path(other))
             and _read(shared_digest_path(other)).decode().strip() == digest]
    if twins:  # the roles share one payload (no encryption): one copy on disk, often 100+ MB
        atomic_link(shared_path(twins[0]), target)
    else:
        atomic_write(target, payload, SECRET_MODE)
    atomic_write(shared_digest_path(role), digest + "\n")


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


@contextlib.contextmanager
def withdrawn_on_failure(paths):
    """Delete ``paths`` when the block fails: a script that cannot be rebuilt is stale, and the
    server must never hand it out (for example a node whose certificates left the site)."""
    try:
        yield
    except BaseException:
        for path in paths:
            remove_quietly(path)
        raise


@user_errors
def make_genesis(store_dir: str, positions: list[int]) -> dict:
    targets = script_path("genesis.sh"), script_path("validate-genesis.sh")
    with withdrawn_on_failure(targets):
        config = SiteConfig(_view_documents(store_dir, positions)).for_genesis()
        script = _engine().render_script(config, None, workspace=workspace(), shared=_shared("genesis"))
        atomic_write(targets[0], script, SECRET_MODE)
        atomic_write(targets[1], _engine().render_validate_script(config), SECRET_MODE)
    return {"scripts": 2}


def node_scripts(name: str, prefix: str | None = None) -> list[str]:
    """A node's two scripts. ``prefix`` is ``script_path("")``, from callers that list thousands."""
    prefix = prefix or script_path("")
    return [f"{prefix}join-{name}.sh", f"{prefix}validate-{name}.sh"]


def _build_node(store_dir: str, name: str, positions: list[int]) -> None:
    targets = node_scripts(name)
    with withdrawn_on_failure(targets):
        config = SiteConfig(_view_documents(store_dir, positions)).for_node(name)
        script = _engine().render_script(config, name, workspace=workspace(), shared=_shared("join"))
        atomic_write(targets[0], script, SECRET_MODE)
        atomic_write(targets[1], _engine().render_validate_script(config, name), SECRET_MODE)


def _built_path(stamp: str) -> str:
    return stamp[: -len(".sha256")] + ".built.json"


@user_errors
def make_nodes(store_dir: str, group: str, nodes: dict[str, list[int]], digests: dict[str, str],
               changed: list[str]) -> dict:
    """Build the nodes of one ``build_node`` task whose documents changed since they were last
    built (recorded in ``groups/<task>.built.json``), or whose scripts are missing; every node
    when a shared input changed, or when doit runs the task with nothing changed (``doit -a``).
    Every failing node is reported; the others are built and recorded."""
    record_path = _built_path(group_stamp(group))
    try:
        with open(record_path, encoding="utf-8") as handle:
            built_for = json.load(handle)
    except (OSError, ValueError):
        built_for = {}
    everything = not changed or not set(changed).isdisjoint([stamp_path(), shared_digest_path("join")])
    problems, built = [], 0
    for name, positions in nodes.items():
        if everything or built_for.get(name) != digests[name] or not all(map(os.path.exists, node_scripts(name))):
            built_for.pop(name, None)
            try:
                _build_node(store_dir, name, positions)
            except PromenadeError as exc:
                problems.extend(exc.problems)
                continue
            built_for[name] = digests[name]
            built += 2
    atomic_write(record_path, json.dumps({name: built_for[name] for name in sorted(built_for) if name in nodes},
                                         indent=1) + "\n")
    if problems:
        raise PromenadeError(problems)
    return {"scripts": built}


_shared_payloads: dict[str, bytes] = {}  # sha256 -> a shared payload read in this run


def _shared(role: str) -> bytes:
    """The shared payload of ``role``, read once per run (it can be 100 MB). Roles whose payloads
    are equal get the same object, so the engine encodes its base64 once for all scripts."""
    digest = _read(shared_digest_path(role)).decode("ascii").strip()
    if digest not in _shared_payloads:
        _shared_payloads[digest] = _read(shared_path(role))
    return _shared_payloads[digest]


@user_errors
def make_cluster(store_dir: str, positions: list[int]) -> dict:
    target = script_path("validate-cluster.sh")
    with withdrawn_on_failure([target]):
        config = SiteConfig(_view_documents(store_dir, positions))
        atomic_write(target, _engine().render_validate_script(config, cluster=True), SECRET_MODE)
    return {"scripts": 1}


def prune(expected: list[str]) -> dict:
    """Delete scripts of nodes that are no longer in the site."""
    keep = set(expected)
    removed = 0
    for pattern in ("join-*.sh", "validate-*.sh"):
        for path in glob.glob(os.path.join(out_dir(), pattern)):
            if os.path.basename(path) not in keep:
                removed += remove_quietly(path)
    return {"removed": removed}


# --- tasks --------------------------------------------------------------------------------------
_plans: dict[str, tuple[str | None, dict]] = {}  # plan.json -> (its file_signature, its contents)


def _plan() -> dict:
    """The build plan (read once per version: five task families read it); empty before the
    first render (``doit list`` creates tasks without running any)."""
    path = plan_path()
    signature = file_signature(path)
    if path not in _plans or _plans[path][0] != signature:
        try:
            with open(path, encoding="utf-8") as handle:
                _plans[path] = (signature, json.load(handle))
        except FileNotFoundError:
            _plans[path] = (None, {"shared": [], "common": [], "nodes": {}, "groups": {}, "digests": {}})
    return _plans[path][1]


def plan_task() -> dict:
    """``build_plan``."""
    store_dir = rendered_dir()
    extra = template_files() + ENGINE_SOURCES
    return {
        "actions": [(make_plan, [store_dir, extra])],
        "file_dep": [store.index_path(store_dir)] + extra,  # the index holds every document's sha256
        "targets": [plan_path(), stamp_path()],
        "uptodate": [config_changed({"blob_url": blob_url(), "key": key_fingerprint(),
                                     "batches": get_var("batches", None)})],
        "clean": True,
    }


def shared_tasks():
    """``build_shared:<role>``."""
    store_dir = rendered_dir()
    plan = _plan()
    for role in ROLES:
        yield {
            "name": role,
            "actions": [(make_shared, [store_dir, role, shared_path(role)])],
            "file_dep": [store.schema_stamp(store_dir, schema) for schema in plan["shared"]] + ENGINE_SOURCES,
            "targets": [shared_path(role), shared_digest_path(role)],
            "uptodate": [config_changed({"key": key_fingerprint()})],
            "clean": True,
        }


def genesis_task() -> dict:
    """``build_genesis``."""
    store_dir = rendered_dir()
    common = _plan()["common"]
    return {
        "actions": [(make_genesis, [store_dir, common])],
        "file_dep": [stamp_path(), shared_digest_path("genesis")],
        "task_dep": ["build_shared"],
        "targets": [script_path("genesis.sh"), script_path("validate-genesis.sh")],
        "clean": True, "meta": {"scripts": 2},
    }


def batch_count(nodes: int) -> int:
    """How many ``build_node:batch-*`` tasks a site of ``nodes`` nodes gets (0: one task per node)."""
    chosen = get_var("batches", None)
    if chosen is None:
        return BATCHES if nodes > BATCH_ABOVE else 0
    if not chosen.isdigit():
        raise PromenadeError(f"batches={chosen!r}: give a number of batches (0: one task per node)")
    return int(chosen)


def node_tasks():
    """``build_node:<name>`` or ``build_node:batch-<k>of<n>``."""
    store_dir = rendered_dir()
    plan = _plan()
    shared = [stamp_path(), shared_digest_path("join")]
    prefix = script_path("")
    for group, names in plan["groups"].items():
        yield {
            "name": group,
            "doc": f"join and validate scripts of {', '.join(names) if len(names) == 1 else f'{len(names)} nodes'}",
            "actions": [(make_nodes, [store_dir, group, {name: plan["common"] + plan["nodes"][name] for name in names},
                                      {name: plan["digests"][name] for name in names}])],
            "file_dep": shared + [group_stamp(group)],
            "targets": [path for name in names for path in node_scripts(name, prefix)],
            "task_dep": ["build_shared"], "clean": True, "meta": {"scripts": 2 * len(names)},
        }


def cluster_task() -> dict:
    """``build_cluster``."""
    return {
        "actions": [(make_cluster, [rendered_dir(), _plan()["common"]])],
        "file_dep": [stamp_path()],
        "targets": [script_path("validate-cluster.sh")],
        "clean": True, "meta": {"scripts": 1},
    }


def prune_task() -> dict:
    """``build_prune``."""
    expected = sorted(["validate-genesis.sh", "validate-cluster.sh"]
                      + [f"{kind}-{name}.sh" for name in _plan()["nodes"] for kind in ("join", "validate")])
    return {"actions": [(prune, [expected])], "uptodate": [config_changed({"expected": expected})]}


def build_task() -> dict:
    """``build``: every script."""
    return {"actions": None,
            "task_dep": ["build_genesis", "build_node", "build_cluster", "build_prune"]}


class BuildReporter(ConsoleReporter):
    """Compact progress for big builds, then a summary line.

    On a terminal one status line (done / total, current task, elapsed) is redrawn in place.
    Otherwise (logs, CI) the first :attr:`LISTED` executed tasks are one ``.  name`` line each,
    as with doit's ``executed-only`` reporter, and after that one progress line per 10%.
    Up-to-date tasks print nothing. Failures are reported as usual.
    """

    LISTED = 100

    def __init__(self, outstream, options):
        super().__init__(outstream, options)
        self.started = time.monotonic()
        self.tty = hasattr(outstream, "isatty") and outstream.isatty()
        self.total = self.done = self.built = self.uptodate = self.removed = self.executed = 0
        self.decile = 0
        self.building = False  # the summary is about scripts: only shown when build tasks ran

    def initialize(self, tasks, selected_tasks):
        """Count the tasks the selection reaches (delayed families add to it as they appear)."""
        seen, pending = set(), list(selected_tasks)
        while pending:
            name = pending.pop()
            if name in tasks and name not in seen:
                seen.add(name)
                pending.extend(tasks[name].task_dep)
        self.total = len(seen)

    def _step(self, task) -> None:
        self.done += 1
        self.building = self.building or task.name.startswith("build")
        self.total = max(self.total, self.done)  # delayed task families grow the count
        status = f"[{self.done}/{self.total}] {task.name} ({time.monotonic() - self.started:.1f}s)"
        if self.tty:
            self.write("\r\033[K" + status)
            self.outstream.flush()
        elif self.executed > self.LISTED and 10 * self.done // self.total > self.decile:
            self.decile = 10 * self.done // self.total
            self.write(status + "\n")

    def execute_task(self, task):
        if task.actions:
            self.executed += 1
            if not self.tty and self.executed <= self.LISTED:
                self.write(f".  {task.title()}\n")
            elif not self.tty and self.executed == self.LISTED + 1:
                self.write(f"... more than {self.LISTED} tasks to run: progress every 10%\n")

    def add_success(self, task):
        self.built += int(task.values.get("scripts", 0))
        self.removed += int(task.values.get("removed", 0))
        self._step(task)

    def add_failure(self, task, fail):
        if self.tty:
            self.write("\n")
        super().add_failure(task, fail)

    def skip_uptodate(self, task):
        self.uptodate += (task.meta or {}).get("scripts", 0)
        self._step(task)

    def skip_ignore(self, task):
        self._step(task)

    def complete_run(self):
        if self.tty and self.done:
            self.write("\n")
        super().complete_run()
        if not self.building:
            return
        elapsed = time.monotonic() - self.started
        self.write(f"promenade: {self.built} scripts built, {self.uptodate} up to date, {self.removed} removed "
                   f"({self.executed} tasks executed, {elapsed:.2f}s)\n")
