"""Typed access to the rendered site for templates and scripts.

:class:`SiteConfig` wraps the rendered documents (site + certificates) and answers the
questions the role templates and scripts ask: the Genesis settings, a node's addresses and
labels, a certificate by name, the no_proxy list. A missing required value raises
:class:`PromenadeError` naming the document and the path that should hold it, so a template
never fails with a bare Jinja error.

``for_genesis()`` and ``for_node(name)`` return the view one script is built from: the genesis
view leaves out every KubernetesNode; a node's view leaves out the Genesis document and the
other nodes, so a change to one node cannot affect another node's files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from .documents import Document, format_path
from .errors import Problem, PromenadeError

GENESIS = "promenade/Genesis/v1"
NODE = "promenade/KubernetesNode/v1"
HOST_SYSTEM = "promenade/HostSystem/v1"
KUBELET = "promenade/Kubelet/v1"
NETWORK = "promenade/KubernetesNetwork/v1"
DOCKER = "promenade/Docker/v1"
ENCRYPTION_POLICY = "promenade/EncryptionPolicy/v1"
PKI_CATALOG = "promenade/PKICatalog/v1"
CA = "deckhand/CertificateAuthority/v1"
CA_KEY = "deckhand/CertificateAuthorityKey/v1"
CERTIFICATE = "deckhand/Certificate/v1"
CERTIFICATE_KEY = "deckhand/CertificateKey/v1"
PUBLIC_KEY = "deckhand/PublicKey/v1"
PRIVATE_KEY = "deckhand/PrivateKey/v1"
#: every PKI document schema, in the order certificates.yaml groups them
PKI_SCHEMAS = (CA, CA_KEY, CERTIFICATE, CERTIFICATE_KEY, PUBLIC_KEY, PRIVATE_KEY)

ETCD_LABEL = "kubernetes-etcd=enabled"
#: environment variable holding the passphrase of gpg-encrypted payloads (build time and on the node)
ENCRYPTION_KEY_VARIABLE = "PROMENADE_ENCRYPTION_KEY"
DEFAULT_DOMAIN = "local"
DEFAULT_EXTERNAL_IP = "127.0.0.1"
_REQUIRED = object()


def _split(dotted: str) -> list[Any]:
    """``apiserver.arguments`` -> ``['apiserver', 'arguments']``; ``a[0]`` -> ``['a', 0]``."""
    parts: list[Any] = []
    for piece in dotted.strip(".").split("."):
        name, _, rest = piece.partition("[")
        if name:
            parts.append(name)
        while rest:
            index, _, rest = rest.partition("]")
            parts.append(int(index))
            rest = rest.lstrip("[")
    return parts


def _lookup(data: Any, path: list[Any]) -> Any:
    """The value at ``path`` inside ``data``, or ``_REQUIRED`` if any step is missing or null."""
    for part in path:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and -len(data) <= part < len(data):
            data = data[part]
        else:
            return _REQUIRED
    return _REQUIRED if data is None else data


@dataclass(frozen=True)
class Host:
    """The machine a script is built for: the Genesis document or one KubernetesNode."""

    name: str
    hostname: str
    ip: str
    domain: str
    external_ip: str
    static_labels: tuple[str, ...]
    dynamic_labels: tuple[str, ...]
    join_ips: tuple[str, ...]
    is_genesis: bool

    @property
    def fqdn(self) -> str:
        return f"{self.hostname}.{self.domain}"

    @property
    def cert_suffix(self) -> str:
        """How PKICatalog names this host's certificates: ``genesis`` or the hostname."""
        return "genesis" if self.is_genesis else self.hostname

    @property
    def kubelet_certificate(self) -> str:
        return f"kubelet-{self.cert_suffix}"

    @property
    def etcd_member(self) -> bool:
        """Genesis always runs etcd; other nodes when they carry the etcd label."""
        return self.is_genesis or ETCD_LABEL in self.dynamic_labels

    @property
    def etcd_certificate(self) -> str:
        return f"kubernetes-etcd-{self.cert_suffix}"

    @property
    def etcd_peer_certificate(self) -> str:
        return f"kubernetes-etcd-{self.cert_suffix}-peer"

    @property
    def label_keys(self) -> tuple[str, ...]:
        """Keys of the dynamic labels (``a=b`` -> ``a``), e.g. to remove them again."""
        return tuple(label.split("=", 1)[0] for label in self.dynamic_labels)


class SiteConfig:
    """Accessors over rendered documents, in rendered order (the first document of a schema wins)."""

    def __init__(self, documents: Iterable[Document]):
        self._index([(doc.key, doc) for doc in documents])
        self.host: Host | None = None  # the machine of a for_genesis() / for_node() view

    def _index(self, pairs: list[tuple[tuple, Document]]) -> None:
        self.documents = [doc for _key, doc in pairs]
        self._keys = [key for key, _doc in pairs]
        self._by_key: dict[tuple, Document] = {}
        self._first: dict[str, Document] = {}
        for key, doc in pairs:
            self._by_key.setdefault(key, doc)
            self._first.setdefault(key[0], doc)

    def _subset(self, keep) -> "SiteConfig":
        """A config of the documents whose (schema, name) satisfies ``keep``."""
        view = SiteConfig.__new__(SiteConfig)
        view._index([(key, doc) for key, doc in zip(self._keys, self.documents) if keep(*key)])
        view.host = None
        return view

    # --- documents -------------------------------------------------------------------------
    def first(self, schema: str) -> Document | None:
        """The first document with ``schema``, or None."""
        return self._first.get(schema)

    def document(self, schema: str) -> Document:
        """The first document with ``schema``; an error if the site has none."""
        doc = self.first(schema)
        if doc is None:
            raise PromenadeError(Problem(f"the site has no {schema} document", schema=schema))
        return doc

    def named(self, schema: str, name: str) -> Document:
        """The document ``schema`` / ``name``; an error naming both if it is missing."""
        doc = self._by_key.get((schema, name))
        if doc is None:
            raise PromenadeError(Problem(f"the site has no {schema} document named {name!r}",
                                         schema=schema, name=name))
        return doc

    def get(self, kind: str, dotted_path: str, default: Any = _REQUIRED) -> Any:
        """Value at ``dotted_path`` in the data of the first ``promenade/<kind>/v1`` document.

        Without ``default``, a missing (or null) value is an error naming the document and path.
        """
        schema = kind if "/" in kind else f"promenade/{kind}/v1"
        return self.value(self.first(schema) if default is not _REQUIRED else self.document(schema),
                          dotted_path, default)

    @staticmethod
    def value(doc: Document | None, dotted_path: str, default: Any = _REQUIRED) -> Any:
        """Value at ``dotted_path`` inside ``doc.data`` (see :meth:`get`)."""
        path = _split(dotted_path)
        found = _lookup(doc.data, path) if doc is not None else _REQUIRED
        if found is not _REQUIRED:
            return found
        if default is not _REQUIRED:
            return default
        raise PromenadeError(doc.problem(f"a value is required at {format_path(['data'] + path)}",
                                         ["data"] + path))

    # --- the kinds --------------------------------------------------------------------------
    @property
    def genesis(self) -> dict:
        return self.document(GENESIS).data

    @property
    def nodes(self) -> dict[str, Document]:
        """KubernetesNode documents by metadata.name, in rendered order."""
        return {key[1]: doc for key, doc in zip(self._keys, self.documents) if key[0] == NODE}

    def node(self, name: str) -> Document:
        return self.named(NODE, name)

    @property
    def host_system(self) -> dict:
        return self.document(HOST_SYSTEM).data

    @property
    def kubelet(self) -> dict:
        return self.document(KUBELET).data

    @property
    def network(self) -> dict:
        return self.document(NETWORK).data

    @property
    def docker(self) -> dict:
        return self.document(DOCKER).data

    @property
    def encryption_policy(self) -> dict:
        """The first EncryptionPolicy's data, ``{}`` without one (the policy is optional)."""
        doc = self.first(ENCRYPTION_POLICY)
        return doc.data if doc is not None and isinstance(doc.data, dict) else {}

    def armada_documents(self) -> list[dict]:
        """Every ``armada/*`` document, whole and in rendered order (the bootstrap manifest)."""
        return [doc.to_dict() for doc in self.documents if (doc.schema or "").startswith("armada/")]

    # --- PKI ----------------------------------------------------------------------------------
    def _pem(self, schema: str, name: str) -> str:
        doc = self.named(schema, name)
        if not isinstance(doc.data, str) or not doc.data.strip():
            raise PromenadeError(doc.problem("expected PEM text", ["data"]))
        return doc.data if doc.data.endswith("\n") else doc.data + "\n"

    def _first_pem(self, schema: str, names: tuple[str, ...]) -> str:
        """PEM of the first of ``names`` the site has (later names are fallbacks)."""
        for name in names[:-1]:
            if (schema, name) in self._by_key:
                return self._pem(schema, name)
        return self._pem(schema, names[-1])

    def certificate(self, *names: str) -> str:
        """A certificate by document name; extra names are fallbacks, e.g. ``("kubelet-client", "apiserver")``."""
        return self._first_pem(CERTIFICATE, names)

    def certificate_key(self, *names: str) -> str:
        return self._first_pem(CERTIFICATE_KEY, names)

    def ca(self, *names: str) -> str:
        """A CA certificate by name; extra names are fallbacks (e.g. ``("kubelet", "kubernetes")``)."""
        return self._first_pem(CA, names)

    def keypair(self, name: str) -> tuple[str, str]:
        """``(public PEM, private PEM)`` of a PKICatalog key pair."""
        return self._pem(PUBLIC_KEY, name), self._pem(PRIVATE_KEY, name)

    # --- derived values ---------------------------------------------------------------------------
    @property
    def proxy_url(self) -> str:
        """The HTTP(S) proxy for apt and the container runtime, ``""`` without one."""
        return self.get("KubernetesNetwork", "proxy.url", "")

    @property
    def no_proxy(self) -> str:
        """Comma-separated no_proxy list; empty when the site has no proxy."""
        if not self.proxy_url:
            return ""
        domain = self.get("KubernetesNetwork", "dns.cluster_domain")
        names = [str(item) for item in self.get("KubernetesNetwork", "proxy.additional_no_proxy", [])]
        names += ["127.0.0.1", "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                  f"kubernetes.default.svc.{domain}"]
        return ",".join(dict.fromkeys(names))

    def join_ips(self, node: Document) -> list[str]:
        """Apiserver addresses a node reaches the cluster through (its haproxy backends).

        ``join_ips``, else ``[join_ip]``, else the Genesis ip when the view holds Genesis.
        """
        ips = self.value(node, "join_ips", None)
        if ips:
            return [str(ip) for ip in ips]
        single = self.value(node, "join_ip", None)
        if single:
            return [str(single)]
        genesis = self.first(GENESIS)
        if genesis is not None:
            return [str(self.value(genesis, "ip"))]
        raise PromenadeError(node.problem("a value is required at .data.join_ips (or .data.join_ip): "
                                          "the apiservers this node joins through", ["data", "join_ips"]))

    def _host(self, doc: Document, is_genesis: bool) -> Host:
        return Host(
            name=doc.name,
            hostname=str(self.value(doc, "hostname")),
            ip=str(self.value(doc, "ip")),
            domain=str(self.value(doc, "domain", DEFAULT_DOMAIN)),
            external_ip=str(self.value(doc, "external_ip", DEFAULT_EXTERNAL_IP)),
            static_labels=tuple(map(str, self.value(doc, "labels.static", []))),
            dynamic_labels=tuple(map(str, self.value(doc, "labels.dynamic", []))),
            join_ips=tuple(self.join_ips(doc)),
            is_genesis=is_genesis,
        )

    # --- views ------------------------------------------------------------------------------------
    def for_genesis(self) -> "SiteConfig":
        """The genesis script's view: every document except the KubernetesNodes (a view is its own view)."""
        if self.host is not None and self.host.is_genesis:
            return self
        view = self._subset(lambda schema, _name: schema != NODE)
        view.host = view._host(view.document(GENESIS), is_genesis=True)
        return view

    def for_node(self, name: str) -> "SiteConfig":
        """Node ``name``'s view: everything except Genesis and the other KubernetesNodes (a view is its own view)."""
        if self.host is not None and not self.host.is_genesis and self.host.name == name:
            return self
        node = self.node(name)
        view = self._subset(lambda schema, doc_name: schema != GENESIS and (schema != NODE or doc_name == name))
        view.host = view._host(node, is_genesis=False)
        return view
