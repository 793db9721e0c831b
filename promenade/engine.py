"""Scripts: ``genesis.sh``, ``join-<node>.sh`` and ``validate-*.sh`` from rendered documents.

A node script is the text rendered from ``templates/scripts/<kind>.sh.j2`` followed by its
payloads, each a marker line ``#@promenade-payload <label>`` and the base64 of the (possibly
gpg-encrypted) tar.gz, one ``#``-prefixed line per 76 characters (so ``bash -n`` and
shellcheck skip them as comments). The payloads, in extraction order:

* ``node``: the role files rendered for this node (common + genesis / join);
* ``shared``: the HostSystem ``files``, the same archive for genesis and every join script, so
  it is compressed once and reused;
* ``genesis`` (genesis.sh only): the Genesis ``files``.

So HostSystem files override role files of the same path and Genesis files override both, as
in the original. In by-reference mode (``Workspace(blob_url=...)``) join scripts carry only the
node payload and fetch the shared one from ``<blob_url>/<sha256>``, checking its digest.

The functions here are the whole engine: ``doit build`` (``promenade.tasks.build``), the CLI
and the API server call them and get the same bytes for the same documents.
"""

from __future__ import annotations

import atexit
import base64
import functools
import hashlib
import json
import os
import shlex
import shutil
import tempfile
from dataclasses import dataclass
from typing import Iterable

import jinja2

from . import bundles, downloads
from .config import ENCRYPTION_POLICY, GENESIS, HOST_SYSTEM, SiteConfig
from .documents import Document
from .errors import Problem, PromenadeError
from .fileio import SECRET_MODE, atomic_write
from .trees import TEMPLATES_DIR, FileEntry, compiled_templates, host_files, node_files

SCRIPTS_DIR = os.path.join(TEMPLATES_DIR, "scripts")
MARKER = "#@promenade-payload"
DEFAULT_METRICS_DIR = "/var/log/node-exporter-textfiles"
DEFAULT_VALIDATION_IMAGE = "busybox:1.28.3"
SYSTEMD_ACTIONS = ("enable", "start", "stop", "disable", "mask")
NODE_PHASES = ("validate-host", "extract-payload", "configure-host", "install-packages", "start-services",
               "start-kubelet")
GENESIS_PHASES = NODE_PHASES + ("prepare-armada", "wait-api", "label-node", "wait-armada", "validate", "finish")
JOIN_PHASES = NODE_PHASES + ("wait-node-ready", "label-node", "wait-haproxy", "finish")
VALIDATE_NODE_PHASES = ("wait-api", "node-ready", "pod-logs")
VALIDATE_CLUSTER_PHASES = ("wait-api", "nodes")


@dataclass
class Workspace:
    """Where a build keeps downloads and ciphertexts, and how join scripts get the shared payload.

    ``directory`` is the output directory (``build/``): downloads go to ``<dir>/cache/`` and
    ciphertexts to ``<dir>/state/ciphers/`` so rebuilding unchanged payloads keeps their bytes.
    Without one, a private temporary directory is used for this process. ``blob_url`` switches
    join scripts to by-reference mode.
    """

    directory: str | None = None
    blob_url: str | None = None

    def __post_init__(self):
        if self.directory is None:
            self.directory = tempfile.mkdtemp(prefix="promenade-build-")
            atexit.register(shutil.rmtree, self.directory, True)

    @functools.cached_property
    def downloads(self) -> downloads.Cache:
        return downloads.Cache(os.path.join(self.directory, "cache"))

    @functools.cached_property
    def ciphers(self) -> bundles.CipherCache:
        return bundles.CipherCache(os.path.join(self.directory, "state", "ciphers"))

    def blob_path(self, digest: str) -> str:
        """Where by-reference blobs are published: ``<dir>/blobs/<sha256>``."""
        return os.path.join(self.directory, "blobs", digest)


@functools.lru_cache(maxsize=None)
def default_workspace() -> Workspace:
    """The workspace of callers that pass none (CLI, API): one private directory per process."""
    return Workspace()


@dataclass(frozen=True)
class Payload:
    """One sealed payload of a script and how the script gets it."""

    label: str
    blob: bytes
    embedded: bool = True

    @functools.cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.blob).hexdigest()

    @functools.cached_property
    def section(self) -> bytes:
        """The marker line and the ``#``-prefixed base64 lines appended to the script."""
        encoded = base64.b64encode(self.blob)
        lines = [encoded[start:start + 76] for start in range(0, len(encoded), 76)]
        body = b"#" + b"\n#".join(lines) + b"\n" if lines else b""
        return f"{MARKER} {self.label}\n".encode() + body


# --- views and site values ------------------------------------------------------------------------
def _role(node: str | None) -> str:
    return "genesis" if node is None else "join"


def file_specs(config: SiteConfig, schema: str) -> list[tuple[Document, int, dict]]:
    """The ``files`` of the HostSystem or the Genesis document as (document, index, spec)."""
    doc = config.document(schema)
    return [(doc, index, spec) for index, spec in enumerate(config.value(doc, "files", [])) if isinstance(spec, dict)]


def placed_paths(config: SiteConfig, role: str) -> set[str]:
    """Paths the file payloads of ``role`` provide (they override role files of the same path)."""
    schemas = (HOST_SYSTEM, GENESIS) if role == "genesis" else (HOST_SYSTEM,)
    return {os.path.normpath(str(spec.get("path", ""))) for schema in schemas
            for _doc, _index, spec in file_specs(config, schema)}


def file_entries(config: SiteConfig, schema: str, workspace: Workspace) -> list[FileEntry]:
    """Entries of the HostSystem or Genesis ``files`` in spec order: content / symlink and downloads."""
    inline = host_files(config, "join")  # HostSystem content / symlink entries, in order
    if schema == GENESIS:  # host_files lists the Genesis ones after them
        inline = host_files(config, "genesis")[len(inline):]
    inline = iter(inline)
    entries = []
    for doc, index, spec in file_specs(config, schema):
        where = ["data", "files", index]
        if spec.get("content") is not None or spec.get("symlink") is not None:
            entries.append(next(inline))
        elif spec.get("url") or spec.get("tar_url"):
            data = downloads.resolve(workspace.downloads, spec,
                                     lambda message, doc=doc, where=where: doc.problem(message, where))
            entries.append(FileEntry(os.path.normpath(str(spec["path"])), int(spec["mode"]), data))
        else:
            raise PromenadeError(doc.problem("a file needs one of content, symlink, url or tar_url + tar_path",
                                             where))
    return entries


def encryption_wanted(config: SiteConfig, role: str) -> bool:
    """Whether the EncryptionPolicy asks for ``scripts.<role>: {gpg: {}}``."""
    method = config.encryption_policy.get("scripts", {}).get(role)
    if not method:
        return False
    if isinstance(method, dict) and set(method) == {"gpg"}:
        return True
    doc = config.first(ENCRYPTION_POLICY)
    raise PromenadeError(doc.problem(f"unsupported encryption method {method!r}; only gpg: {{}} is supported",
                                     ["data", "scripts", role]))


def _passphrase(config: SiteConfig, role: str) -> str | None:
    return bundles.encryption_key(required=True) if encryption_wanted(config, role) else None


# --- payloads -------------------------------------------------------------------------------------
_last_archive: dict[str, bytes] = {}


def shared_archive(config: SiteConfig, workspace: Workspace) -> bytes:
    """The tar.gz of the HostSystem ``files``: the same for genesis and every join script.

    Compressing a 100 MB payload takes seconds, so the last archive is kept per process, keyed
    by a digest of the file specs (downloads are content-addressed by URL and pin).
    """
    specs = [spec for _doc, _index, spec in file_specs(config, HOST_SYSTEM)]
    key = hashlib.sha256(json.dumps(specs, sort_keys=True, default=str).encode()).hexdigest()
    if key not in _last_archive:
        _last_archive.clear()
        _last_archive[key] = bundles.tar_gz(file_entries(config, HOST_SYSTEM, workspace))
    return _last_archive[key]


def shared_payload(config: SiteConfig, role: str, workspace: Workspace) -> bytes:
    """The shared payload of ``role``: :func:`shared_archive`, encrypted if the policy asks for it."""
    return bundles.seal(shared_archive(config, workspace), _passphrase(config, role), workspace.ciphers)


def node_payload(view: SiteConfig, node: str | None, workspace: Workspace) -> bytes:
    """The sealed role files of the genesis node (``node`` None) or of KubernetesNode ``node``."""
    role = _role(node)
    overridden = placed_paths(view, role)
    entries = [entry for entry in node_files(view, node) if os.path.normpath(entry.path) not in overridden]
    return bundles.seal(bundles.tar_gz(entries, level=bundles.NODE_LEVEL), _passphrase(view, role), workspace.ciphers)


def genesis_files_payload(view: SiteConfig, workspace: Workspace) -> bytes | None:
    """The sealed Genesis ``files`` (extracted last, so they override HostSystem files), if any."""
    entries = file_entries(view, GENESIS, workspace)
    if not entries:
        return None
    return bundles.seal(bundles.tar_gz(entries), _passphrase(view, "genesis"), workspace.ciphers)


# --- templates ------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def environment() -> jinja2.Environment:
    """Jinja environment of the script templates; ``sh`` quotes a value for bash."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(SCRIPTS_DIR), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, autoescape=False, bytecode_cache=compiled_templates())
    env.filters["sh"] = lambda value: shlex.quote(str(value))
    return env


def _packages(config: SiteConfig, role: str) -> tuple[list[str], list[str]]:
    """(apt packages, armored apt keys) of ``packages.common`` and ``packages.<role>``."""
    names, keys = [], []
    for group in ("common", role):
        spec = config.get("HostSystem", f"packages.{group}", {}) or {}
        names += [str(value) for value in (spec.get("required") or {}).values()]
        names += [str(value) for value in spec.get("additional") or []]
        keys += [str(key).strip() for key in spec.get("keys") or []]
    return list(dict.fromkeys(names)), keys


def _systemd_actions(config: SiteConfig) -> list[tuple[str, str]]:
    units = config.get("HostSystem", "systemd_units", {}) or {}
    return [(unit, action) for unit, flags in units.items() for action in SYSTEMD_ACTIONS
            if isinstance(flags, dict) and flags.get(action)]


def _common_context(config: SiteConfig, script_name: str, title: str, phases: Iterable[str]) -> dict:
    return {
        "script_name": script_name,
        "title": title,
        "phases": list(phases),
        "resumable": False,
        "hostname": config.host.hostname if config.host else None,
        "dns_checks": [str(name) for name in
                       config.get("KubernetesNetwork", "dns.bootstrap_validation_checks", []) or []],
        "validation_image": config.get("HostSystem", "validation.pod_logs.image", DEFAULT_VALIDATION_IMAGE),
    }


def _render(template: str, context: dict) -> bytes:
    try:
        return environment().get_template(template).render(context).encode("utf-8")
    except jinja2.UndefinedError as exc:
        raise PromenadeError(Problem(f"script template needs an undefined value: {exc.message}",
                                     file=os.path.join("templates", "scripts", template))) from None


def _node_script(view: SiteConfig, node: str | None, payloads: list[Payload], *,
                 leave_kubectl: bool, blob_url: str | None) -> list[bytes]:
    role = _role(node)
    packages, keys = _packages(view, role)
    name = "genesis.sh" if node is None else f"join-{node}.sh"
    context = _common_context(view, name, f"{'Genesis' if node is None else 'Join'} script for "
                              f"{view.host.hostname}", GENESIS_PHASES if node is None else JOIN_PHASES)
    context.update(
        resumable=True,
        labels=list(view.host.dynamic_labels),
        packages=packages,
        apt_keys=keys,
        proxy_url=view.proxy_url,
        no_proxy=view.no_proxy,
        systemd_actions=_systemd_actions(view),
        encrypted=encryption_wanted(view, role),
        payloads=[{"label": p.label, "sha256": p.sha256, "source": "embedded" if p.embedded else "blob"}
                  for p in payloads],
        blob_url=blob_url if any(not p.embedded for p in payloads) else None,
        leave_kubectl=leave_kubectl,
        metrics_dir=view.get("Genesis", "armada.metrics.output_dir", DEFAULT_METRICS_DIR) if node is None else "",
    )
    text = _render(f"{role}.sh.j2", context)
    return [text] + [p.section for p in payloads if p.embedded]


def _config(documents: Iterable[Document] | SiteConfig) -> SiteConfig:
    return documents if isinstance(documents, SiteConfig) else SiteConfig(documents)


def render_script(documents, node: str | None, *, leave_kubectl: bool = False,
                  workspace: Workspace | None = None, shared: bytes | None = None) -> list[bytes]:
    """genesis.sh (``node`` None) or join-<node>.sh, as the parts to write one after the other
    (the embedded shared payload is one object for every script: never copied into each);
    ``shared`` is a prebuilt :func:`shared_payload`."""
    config = _config(documents)
    workspace = workspace or default_workspace()
    view = config.for_genesis() if node is None else config.for_node(node)
    if shared is None:
        shared = shared_payload(view, _role(node), workspace)
    by_reference = node is not None and workspace.blob_url is not None
    payloads = [Payload("node", node_payload(view, node, workspace)), _shared(shared, not by_reference)]
    genesis_files = genesis_files_payload(view, workspace) if node is None else None
    if genesis_files is not None:
        payloads.append(Payload("genesis", genesis_files))
    if by_reference and not os.path.exists(workspace.blob_path(payloads[1].sha256)):  # content-addressed
        atomic_write(workspace.blob_path(payloads[1].sha256), shared, SECRET_MODE)
    return _node_script(view, node, payloads, leave_kubectl=leave_kubectl, blob_url=workspace.blob_url)


_last_shared: list[Payload] = []


def _shared(blob: bytes, embedded: bool) -> Payload:
    """The shared Payload; reused while callers pass the very same bytes object (its base64 is 100+ MB)."""
    if not (_last_shared and _last_shared[0].blob is blob and _last_shared[0].embedded == embedded):
        _last_shared[:] = [Payload("shared", blob, embedded)]
    return _last_shared[0]


def render_join_script(documents, node_name: str, *, leave_kubectl: bool = False,
                       workspace: Workspace | None = None, shared: bytes | None = None) -> bytes:
    """``join-<node_name>.sh`` from rendered documents (site + certificates)."""
    return b"".join(render_script(documents, node_name, leave_kubectl=leave_kubectl, workspace=workspace,
                                  shared=shared))


def render_genesis_script(documents, *, workspace: Workspace | None = None, shared: bytes | None = None) -> bytes:
    """``genesis.sh`` from rendered documents (site + certificates)."""
    return b"".join(render_script(documents, None, workspace=workspace, shared=shared))


def render_validate_script(documents, node_name: str | None = None, *, cluster: bool = False) -> bytes:
    """``validate-cluster.sh`` (``cluster``), ``validate-genesis.sh`` (no node) or ``validate-<node>.sh``."""
    config = _config(documents)
    if cluster:
        return _render("validate-cluster.sh.j2",
                       _common_context(config, "validate-cluster.sh", "Cluster validation", VALIDATE_CLUSTER_PHASES))
    view = config.for_genesis() if node_name is None else config.for_node(node_name)
    name = f"validate-{'genesis' if node_name is None else node_name}.sh"
    return _render("validate-node.sh.j2",
                   _common_context(view, name, f"Validation of {view.host.hostname}", VALIDATE_NODE_PHASES))
