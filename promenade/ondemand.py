"""Designs named by ``design_ref`` and the join scripts built from them on demand (the API's engine side).

A design is a local file or directory (below an allowed root), a ``file://`` URL, or an
``http(s)://`` URL (``deckhand+http(s)://`` is accepted as plain HTTP) returning YAML documents.
Join scripts are built by the same engine as ``doit build``, from the design plus a
``promenade/KubernetesNode/v1`` document synthesised from the request, and cached by
(design content hash, node parameters).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import ipaddress
import json
import os
import re
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import httpx

from .config import DEFAULT_DOMAIN, DEFAULT_EXTERNAL_IP, GENESIS, NODE
from .documents import Document, check_envelopes, load_files, site_files
from .engine import Workspace, render_join_script
from .errors import Problem, PromenadeError
from .fileio import SECRET_MODE, atomic_write, ensure_dir
from .rendering import render
from .trees import TEMPLATES_DIR
from .validation import validate

APISERVER_LABEL = "kubernetes-apiserver=enabled"
HOSTNAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
DOMAIN = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_./-]{0,250}[A-Za-z0-9])?=([A-Za-z0-9_.-]{0,63})$")
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def flag(text: str) -> bool:
    """``true``/``yes``/``on``/``1`` or ``false``/``no``/``off``/``0``/empty; ValueError otherwise."""
    if text.lower() not in TRUE + FALSE:
        raise ValueError(f"{text!r} must be true or false")
    return text.lower() in TRUE


class DesignError(Exception):
    """A design_ref that cannot be used (bad scheme, outside the allowed roots, not retrievable)."""


@dataclass(frozen=True)
class NodeRequest:
    """The node parameters of a join-scripts request, checked."""

    hostname: str
    ip: str
    external_ip: str = DEFAULT_EXTERNAL_IP
    domain: str = DEFAULT_DOMAIN
    static_labels: tuple[str, ...] = ()
    dynamic_labels: tuple[str, ...] = ()
    leave_kubectl: bool = False

    @classmethod
    def parse(cls, single: dict[str, str], labels_static: list[str], labels_dynamic: list[str],
              ) -> "NodeRequest":
        """Build from query values; ``ValueError`` names the first bad parameter."""
        hostname = single["hostname"]
        if not HOSTNAME.match(hostname):
            raise ValueError(f"hostname {hostname!r} must match {HOSTNAME.pattern}")
        for key in ("ip", "external_ip"):
            if key in single:
                try:
                    ipaddress.IPv4Address(single[key])
                except ValueError:
                    raise ValueError(f"{key} {single[key]!r} is not an IPv4 address") from None
        if "domain" in single and not DOMAIN.match(single["domain"]):
            raise ValueError(f"domain {single['domain']!r} is not a DNS domain")
        for label in labels_static + labels_dynamic:
            if not LABEL.match(label):
                raise ValueError(f"label {label!r} must look like key=value")
        try:
            leave_kubectl = flag(single.get("leave_kubectl", "false"))
        except ValueError as exc:
            raise ValueError(f"leave_kubectl {exc}") from None
        return cls(hostname=hostname, ip=single["ip"],
                   external_ip=single.get("external_ip", cls.external_ip),
                   domain=single.get("domain", cls.domain),
                   static_labels=tuple(labels_static), dynamic_labels=tuple(labels_dynamic),
                   leave_kubectl=leave_kubectl)

    def key(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    def document(self, design: list[Document]) -> Document:
        """The ``KubernetesNode`` document for this node; join_ips are the design's API servers."""
        data = {
            "hostname": self.hostname,
            "ip": self.ip,
            "external_ip": self.external_ip,
            "domain": self.domain,
            "join_ips": join_ips(design, self.hostname),
            "labels": {"static": list(self.static_labels), "dynamic": list(self.dynamic_labels)},
        }
        raw = {"schema": NODE,
               "metadata": {"schema": "metadata/Document/v1", "name": self.hostname,
                            "layeringDefinition": {"abstract": False, "layer": "site"},
                            "storagePolicy": "cleartext"},
               "data": data}
        return Document(raw, file="<join-scripts query>")


def join_ips(design: list[Document], hostname: str) -> list[str]:
    """IPs of the genesis node and of every other node labelled ``kubernetes-apiserver=enabled``."""
    ips = []
    for doc in design:
        data = doc.data if isinstance(doc.data, dict) else {}
        labels = data.get("labels") if isinstance(data.get("labels"), dict) else {}
        apiserver = doc.schema == GENESIS or (
            doc.schema == NODE and APISERVER_LABEL in (labels.get("dynamic") or []))
        if apiserver and data.get("hostname") != hostname and data.get("ip") and data["ip"] not in ips:
            ips.append(data["ip"])
    return ips


@dataclass
class Design:
    """A fetched design: the files to load and the content hash that keys the cache."""

    paths: list[str]
    digest: str
    labels: dict[str, str] = field(default_factory=dict)

    def relabel(self, problems: list[Problem]) -> list[Problem]:
        """Point problems in fetched copies at the design_ref the user gave."""
        return [p._replace(file=self.labels.get(p.file, p.file)) for p in problems]


class Designs:
    """Fetches designs: local paths below ``roots``, or HTTP(S) URLs into ``cache_dir``."""

    def __init__(self, roots: list[str], cache_dir: str, max_bytes: int, timeout: float):
        self.roots = [os.path.realpath(root) for root in roots]
        self.cache_dir = cache_dir
        self.max_bytes = max_bytes
        self.client = httpx.AsyncClient(timeout=timeout, follow_redirects=True, max_redirects=3)

    async def close(self) -> None:
        await self.client.aclose()

    async def fetch(self, ref: str) -> Design:
        parts = urlsplit(ref)
        scheme = parts.scheme.lower().removeprefix("deckhand+")
        if scheme in ("http", "https"):
            return await self._fetch_url(ref.split("+", 1)[1] if ref.lower().startswith("deckhand+") else ref)
        if scheme in ("file", ""):
            return await asyncio.to_thread(self._local, unquote(parts.path) if scheme else ref)
        raise DesignError(f"design_ref scheme {parts.scheme!r} is not supported (use a path, file://, http(s)://)")

    def _local(self, path: str) -> Design:
        real = os.path.realpath(path)
        if not any(real == root or real.startswith(root + os.sep) for root in self.roots):
            raise DesignError(f"design_ref {path!r} is outside the design directories this server may read")
        if os.path.isdir(real):
            paths = site_files(real)
        elif os.path.isfile(real):
            paths = [real]
        else:
            raise DesignError(f"design_ref {path!r} does not exist")
        digest = hashlib.sha256()
        for name in paths:
            with open(name, "rb") as handle:
                content = handle.read()
            digest.update(f"{os.path.relpath(name, real)}\0{len(content)}\0".encode())
            digest.update(content)
        return Design(paths, digest.hexdigest())

    async def _fetch_url(self, url: str) -> Design:
        chunks, size = [], 0
        try:
            async with self.client.stream("GET", url) as response:
                if response.status_code >= 400:
                    raise DesignError(f"design_ref answered HTTP {response.status_code}")
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise DesignError(f"design_ref is larger than {self.max_bytes} bytes")
                    chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise DesignError(f"design_ref could not be fetched: {type(exc).__name__}") from None
        body = b"".join(chunks)
        digest = hashlib.sha256(body).hexdigest()
        path = os.path.join(self.cache_dir, "designs", f"{digest}.yaml")
        atomic_write(path, body, SECRET_MODE)
        return Design([path], digest, {path: urlsplit(url)._replace(query="", fragment="").geturl()})


def render_design(design: Design, node: NodeRequest | None = None) -> list[Document]:
    """Load, render (strict) and validate a design, plus the synthesised document of ``node``.

    The design is validated as for ``doit build``. The node's document is checked by its schema
    and for uniqueness against the design's KubernetesNodes only: a node's view excludes the
    Genesis document, so a reprovisioned genesis host may join as a node.
    Raises :class:`PromenadeError` naming the design_ref's files.
    """
    try:
        docs = load_files(design.paths)
        problems = check_envelopes(docs)
        if problems:
            raise PromenadeError(problems)
        documents = render(docs, strict=True).documents
        problems = [p for p in validate(documents) if p.severity == "error"]
        if node is not None:
            synthesised = node.document(documents)
            problems += node_problems(synthesised, documents)
            documents = documents + [synthesised]
        if problems:
            raise PromenadeError(problems)
    except PromenadeError as exc:
        raise PromenadeError(design.relabel(exc.problems)) from None
    return documents


def node_problems(node: Document, design: list[Document]) -> list[Problem]:
    """Schema problems of a synthesised KubernetesNode, and clashes with the design's KubernetesNodes."""
    problems = [p for p in validate([node]) if p.severity == "error" and p.schema == NODE]
    checks = [(["metadata", "name"], "name", node.name), (["data", "hostname"], "hostname", node.data["hostname"]),
              (["data", "ip"], "IP address", node.data["ip"])]
    for doc in design:
        if doc.schema != NODE or doc.abstract or not isinstance(doc.data, dict):
            continue
        for path, label, value in checks:
            if (doc.name if path[0] == "metadata" else doc.data.get(path[1])) == value:
                problems.append(node.problem(f"{label} {value!r} is also used by the design's {NODE} {doc.name}",
                                             path))
    return problems


def code_fingerprint() -> str:
    """Digest of Promenade's modules and templates: a new version never reuses old cached scripts."""
    digest = hashlib.sha256()
    package = os.path.dirname(os.path.abspath(__file__))
    sources = [os.path.join(package, name) for name in os.listdir(package) if name.endswith(".py")]
    sources += [os.path.join(folder, name) for folder, _dirs, files in os.walk(TEMPLATES_DIR) for name in files]
    for path in sorted(sources):
        with open(path, "rb") as handle:
            digest.update(f"{os.path.relpath(path, package)}\0".encode() + hashlib.sha256(handle.read()).digest())
    return digest.hexdigest()


class JoinScripts:
    """On-demand join scripts, cached on disk by design hash, parameters and code version.

    ``workspace`` is the engine's (downloads, ciphertexts, blobs); the scripts are cached in its
    ``cache/join-scripts/``.
    """

    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self.cache_dir = os.path.join(workspace.directory, "cache", "join-scripts")
        self.code = code_fingerprint()

    def path(self, design: Design, node: NodeRequest) -> str:
        key = hashlib.sha256(f"{self.code}\0{design.digest}\0{node.key()}".encode()).hexdigest()
        return os.path.join(self.cache_dir, f"{key}.sh")

    def build(self, design: Design, node: NodeRequest) -> str:
        """Build (or reuse) the script; returns its cache path. Blocking: run it in a worker thread."""
        path = self.path(design, node)
        if not os.path.exists(path):
            documents = render_design(design, node)
            script = render_join_script(documents, node.hostname, leave_kubectl=node.leave_kubectl,
                                        workspace=self.workspace)
            ensure_dir(self.cache_dir)
            atomic_write(path, script, SECRET_MODE)
        return path
