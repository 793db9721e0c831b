"""The cluster PKI: certificate authorities, certificates and key pairs from PKICatalog documents.

Everything happens in-process with ``cryptography``. The flow is split so that a build tool can
run it incrementally:

* :func:`plan` turns the ``promenade/PKICatalog/v1`` documents (plus any PKI documents the site
  already provides) into one *request* per CA, certificate and key pair;
* :func:`fulfil` turns one request into its documents: it generates the material, or checks and
  reuses what the site provides;
* :func:`certificates_yaml` writes the documents out, and :func:`expiry_row` reports how long
  every CA and certificate stays valid.

Site-wide options, set in any PKICatalog's ``data``: ``key_algorithm`` (``rsa-2048`` default,
``rsa-3072``, ``rsa-4096``, ``ecdsa-p256``) and ``validity: {ca_days, leaf_days}`` (defaults
3650 and 365). They apply to every CA, certificate and key pair of every catalog.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import ipaddress
import multiprocessing
import os
import signal
from typing import Any, Iterable

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .config import CA as CA_SCHEMA
from .config import CA_KEY as CA_KEY_SCHEMA
from .config import CERTIFICATE as CERT_SCHEMA
from .config import CERTIFICATE_KEY as CERT_KEY_SCHEMA
from .config import PKI_SCHEMAS
from .config import PRIVATE_KEY as PRIVATE_KEY_SCHEMA
from .config import PUBLIC_KEY as PUBLIC_KEY_SCHEMA
from .documents import Document, format_path
from .errors import Problem, PromenadeError
from .yamlio import dump_yaml

#: kind of request -> (schema of the public half, schema of the private half)
PAIRS = {
    "ca": (CA_SCHEMA, CA_KEY_SCHEMA),
    "cert": (CERT_SCHEMA, CERT_KEY_SCHEMA),
    "keypair": (PUBLIC_KEY_SCHEMA, PRIVATE_KEY_SCHEMA),
}

ALGORITHMS = ("rsa-2048", "rsa-3072", "rsa-4096", "ecdsa-p256")
DEFAULT_ALGORITHM = "rsa-2048"
DEFAULT_CA_DAYS = 3650
DEFAULT_LEAF_DAYS = 365
DEFAULT_WARN_DAYS = 120
CA_ORGANIZATION = "Kubernetes"
BACKDATE = datetime.timedelta(minutes=5)

_PEM = serialization.Encoding.PEM


# --- planning --------------------------------------------------------------------------------

def expand_service_names(names: Iterable[str]) -> list[str]:
    """Every dot-prefix of each name: ``a.b.c`` -> ``a``, ``a.b``, ``a.b.c``."""
    out = []
    for name in names:
        labels = name.split(".")
        out.extend(".".join(labels[:i]) for i in range(1, len(labels) + 1))
    return out


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _strings(doc: Document, value: Any, path: list, problems: list[Problem]) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        problems.append(doc.problem("must be a list of non-empty strings", path))
        return []
    return value


def _site_options(catalogs: list[Document], problems: list[Problem]) -> tuple[str, int, int]:
    """``key_algorithm``, ``validity.ca_days`` and ``validity.leaf_days`` for the whole site.

    Each is taken from the first catalog that sets it (validation requires catalogs that set
    one to agree), so one switch reaches every CA, certificate and key pair.
    """
    found: dict[str, Any] = {}
    fields = (("key_algorithm", ["data", "key_algorithm"]), ("ca_days", ["data", "validity", "ca_days"]),
              ("leaf_days", ["data", "validity", "leaf_days"]))
    for doc in catalogs:
        for field, path in fields:
            node = doc.data
            for key in path[1:]:
                node = node.get(key) if isinstance(node, dict) else None
            if node is None or field in found:
                continue
            if field == "key_algorithm" and node not in ALGORITHMS:
                problems.append(doc.problem(f"key_algorithm {node!r} is not one of {', '.join(ALGORITHMS)}",
                                            path))
            elif field != "key_algorithm" and (isinstance(node, bool) or not isinstance(node, int) or node < 1):
                problems.append(doc.problem(f"{field} must be a positive number of days", path))
            else:
                found[field] = node
    return (found.get("key_algorithm", DEFAULT_ALGORITHM), found.get("ca_days", DEFAULT_CA_DAYS),
            found.get("leaf_days", DEFAULT_LEAF_DAYS))


def _provided(site_docs: Iterable[Document]) -> dict[tuple[str, str], Document]:
    return {(doc.schema, doc.name): doc for doc in site_docs if doc.schema in PKI_SCHEMAS}


def _attach_provided(request: dict, where: dict, provided: dict, problems: list[Problem]) -> None:
    """Put the site's own documents for this request into it; half pairs are problems."""
    public_schema, private_schema = PAIRS[request["kind"]]
    public = provided.get((public_schema, request["name"]))
    private = provided.get((private_schema, request["name"]))
    if public is None and private is None:
        return
    if public is None or private is None:
        present, missing = (public, private_schema) if private is None else (private, public_schema)
        problems.append(present.problem(
            f"incomplete pair for {request['name']!r}: the site provides {present.schema} but not "
            f"{missing}; provide both documents or neither (then Promenade generates them)"))
        return
    request["provided"] = {"public": public.data, "private": private.data}
    where["provided"] = {"file": public.file, "line": public.line}


def plan(catalogs: Iterable[Document], site_docs: Iterable[Document] = ()) -> tuple[list[dict], list[dict]]:
    """Requests for every CA, certificate and key pair of the catalogs, in catalog order.

    Returns ``(requests, locations)``: each request holds only what determines the material
    (so that editing a description or moving a document does not re-issue anything); the
    matching location says where it was defined, for error messages. Raises
    :class:`PromenadeError` with every problem found.
    """
    provided = _provided(site_docs)
    problems: list[Problem] = []
    requests: list[dict] = []
    locations: list[dict] = []
    seen: dict[tuple[str, str], dict] = {}

    def add(request: dict, doc: Document, path: list) -> None:
        key = (request["kind"], request["name"])
        where = {"file": doc.file, "line": doc.line_of(path), "catalog": doc.name,
                 "path": format_path(path)}
        if key in seen:
            if seen[key] != request:
                problems.append(doc.problem(f"{request['kind']} {request['name']!r} is defined again "
                                            "with different settings", path))
            return
        seen[key] = dict(request)
        _attach_provided(request, where, provided, problems)
        requests.append(request)
        locations.append(where)

    catalogs = [doc for doc in catalogs if isinstance(doc.data, dict)]
    algorithm, ca_days, leaf_days = _site_options(catalogs, problems)
    for doc in catalogs:
        data = doc.data
        authorities = data.get("certificate_authorities") or {}
        if not isinstance(authorities, dict):
            problems.append(doc.problem("certificate_authorities must be a mapping of CA name to CA",
                                        ["data", "certificate_authorities"]))
            authorities = {}
        for ca_name, ca in authorities.items():
            ca_path = ["data", "certificate_authorities", ca_name]
            add({"kind": "ca", "name": str(ca_name), "algorithm": algorithm, "days": ca_days}, doc, ca_path)
            ca = {} if ca is None else ca
            certificates = (ca.get("certificates") or []) if isinstance(ca, dict) else None
            if not isinstance(certificates, list):
                problems.append(doc.problem("must be a mapping with a list of certificates", ca_path))
                continue
            for index, entry in enumerate(certificates):
                path = ca_path + ["certificates", index]
                if not isinstance(entry, dict) or not entry.get("document_name") or not entry.get("common_name"):
                    problems.append(doc.problem("a certificate needs document_name and common_name", path))
                    continue
                hosts = _strings(doc, entry.get("hosts"), path + ["hosts"], problems)
                services = _strings(doc, entry.get("kubernetes_service_names"),
                                    path + ["kubernetes_service_names"], problems)
                add({"kind": "cert", "name": str(entry["document_name"]), "ca": str(ca_name),
                     "common_name": str(entry["common_name"]),
                     "groups": _unique(_strings(doc, entry.get("groups"), path + ["groups"], problems)),
                     "hosts": _unique(hosts + expand_service_names(services)),
                     "algorithm": algorithm, "days": leaf_days}, doc, path)
        keypairs = data.get("keypairs") or []
        if not isinstance(keypairs, list):
            problems.append(doc.problem("keypairs must be a list", ["data", "keypairs"]))
            keypairs = []
        for index, entry in enumerate(keypairs):
            path = ["data", "keypairs", index]
            if not isinstance(entry, dict) or not entry.get("name"):
                problems.append(doc.problem("a key pair needs a name", path))
                continue
            add({"kind": "keypair", "name": str(entry["name"]), "algorithm": algorithm}, doc, path)
    if problems:
        raise PromenadeError(problems)
    return requests, locations


# --- generation ------------------------------------------------------------------------------

def new_private_key(algorithm: str):
    """A fresh private key for ``algorithm`` (one of :data:`ALGORITHMS`)."""
    if algorithm == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=int(algorithm.split("-")[1]))


def _new_key_pem(algorithm: str) -> bytes:
    return new_private_key(algorithm).private_bytes(_PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption())


class KeyPool:
    """RSA private keys made ahead, in one worker process per CPU, while the caller goes on.

    Generating RSA keys is nearly all of the PKI's cost, and each is independent: a run that
    needs many gets them in parallel. ``wanted`` maps a name to its algorithm; :meth:`take`
    returns the key made for a name (waiting for it), or None when none was made (ECDSA keys
    take microseconds; fewer than :data:`MIN_KEYS` or a single CPU are not worth the workers).
    A process that is itself a worker (``doit -n``) makes its keys inline.
    """

    MIN_KEYS = 4

    def __init__(self, wanted: dict[str, str]):
        wanted = {name: algorithm for name, algorithm in wanted.items() if algorithm.startswith("rsa-")}
        self._futures: dict[str, concurrent.futures.Future] = {}
        if (len(wanted) >= self.MIN_KEYS and (os.cpu_count() or 1) > 1
                and multiprocessing.parent_process() is None):
            # Workers take SIGTERM's default action, not a handler the caller may have installed.
            executor = concurrent.futures.ProcessPoolExecutor(initializer=signal.signal,
                                                              initargs=(signal.SIGTERM, signal.SIG_DFL))
            self._futures = {name: executor.submit(_new_key_pem, algorithm) for name, algorithm in wanted.items()}
            executor.shutdown(wait=False)

    def take(self, name: str):
        future = self._futures.pop(name, None)
        if future is None:
            return None
        return serialization.load_pem_private_key(future.result(), password=None,
                                                  unsafe_skip_rsa_key_validation=True)


def private_pem(key, pkcs8: bool = False) -> str:
    """PEM of a private key: PKCS#1 / SEC1 (``RSA/EC PRIVATE KEY``) or PKCS#8 (``PRIVATE KEY``)."""
    fmt = serialization.PrivateFormat.PKCS8 if pkcs8 else serialization.PrivateFormat.TraditionalOpenSSL
    return key.private_bytes(_PEM, fmt, serialization.NoEncryption()).decode()


def public_pem(key) -> str:
    """SubjectPublicKeyInfo PEM (``PUBLIC KEY``) of a private or public key."""
    public = key.public_key() if hasattr(key, "public_key") else key
    return public.public_bytes(_PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _builder(subject: x509.Name, issuer: x509.Name, key, days: int, not_after_cap=None):
    start = _now() - BACKDATE
    end = start + datetime.timedelta(days=days)
    if not_after_cap is not None:
        end = min(end, not_after_cap)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))


def generate_ca(request: dict, key=None) -> tuple[str, str]:
    """A self-signed CA ``(certificate PEM, PKCS#1/SEC1 key PEM)``: CN = CA name, O = Kubernetes.

    ``key`` is a private key made ahead for it (see :class:`KeyPool`); else one is made here."""
    key = key or new_private_key(request["algorithm"])
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, CA_ORGANIZATION),
                      x509.NameAttribute(NameOID.COMMON_NAME, request["name"])])
    cert = (_builder(name, name, key, request["days"])
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(_PEM).decode(), private_pem(key)


def issue_certificate(request: dict, ca_cert_pem: str, ca_key_pem: str, key=None) -> tuple[str, str]:
    """A leaf ``(certificate PEM, key PEM)`` signed by the CA, usable for server and client auth."""
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem.encode())
    # The CA key was generated here or checked against its certificate when the CA was accepted;
    # re-validating an RSA key on every load would cost more than issuing the certificate.
    ca_key = serialization.load_pem_private_key(ca_key_pem.encode(), password=None,
                                                unsafe_skip_rsa_key_validation=True)
    key = key or new_private_key(request["algorithm"])
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, group) for group in request["groups"]]
                        + [x509.NameAttribute(NameOID.COMMON_NAME, request["common_name"])])
    is_rsa = isinstance(key, rsa.RSAPrivateKey)
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (_builder(subject, ca_cert.subject, key, request["days"], ca_cert.not_valid_after_utc)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=is_rsa,
                                            content_commitment=False, data_encipherment=False,
                                            key_agreement=False, key_cert_sign=False, crl_sign=False,
                                            encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                     ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                              critical=False))
    if request["hosts"]:
        builder = builder.add_extension(x509.SubjectAlternativeName([_san(h) for h in request["hosts"]]),
                                        critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return cert.public_bytes(_PEM).decode(), private_pem(key)


def generate_keypair(request: dict, key=None) -> tuple[str, str]:
    """A key pair ``(public SPKI PEM, private PKCS#8 PEM)``."""
    key = key or new_private_key(request["algorithm"])
    return public_pem(key), private_pem(key, pkcs8=True)


# --- checking what the site provides ------------------------------------------------------------

def _load_pair(request: dict) -> tuple[Any, Any]:
    """Parse the site's public and private half; unreadable PEM is a mismatch."""
    public, private = request["provided"]["public"], request["provided"]["private"]
    try:
        key = serialization.load_pem_private_key(str(private).encode(), password=None)
        if request["kind"] == "keypair":
            return serialization.load_pem_public_key(str(public).encode()), key
        return x509.load_pem_x509_certificate(str(public).encode()), key
    except (ValueError, TypeError) as exc:
        raise ValueError(f"cannot be read as PEM ({exc})") from None


def certificate_fields(cert: x509.Certificate) -> dict:
    """CN, groups (O) and SANs of a certificate, as the catalog states them."""
    def attrs(oid):
        return [a.value for a in cert.subject.get_attributes_for_oid(oid)]
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        hosts = [str(n.value) for n in names]
    except x509.ExtensionNotFound:
        hosts = []
    cn = attrs(NameOID.COMMON_NAME)
    return {"common_name": cn[0] if cn else None, "groups": attrs(NameOID.ORGANIZATION_NAME),
            "hosts": hosts}


def differences(request: dict, ca_cert_pem: str | None = None, now: datetime.datetime | None = None) -> list[str]:
    """How the site-provided material of ``request`` differs from what the catalog asks for.

    Checks the key matches, expiry, and for certificates CN, groups, SANs and issuer.
    An empty list means the material can be used as it is.
    """
    try:
        public, key = _load_pair(request)
    except ValueError as exc:
        return [f"key: {exc}"]
    found = []
    if public_pem(public.public_key() if request["kind"] != "keypair" else public) != public_pem(key):
        found.append("key: the private key does not belong to the "
                     + ("public key" if request["kind"] == "keypair" else "certificate"))
    if request["kind"] == "keypair":
        return found
    if public.not_valid_after_utc <= (now or _now()):
        found.append(f"expiry: expired on {public.not_valid_after_utc:%Y-%m-%d}")
    if request["kind"] == "ca":
        try:
            is_ca = public.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            found.append("basicConstraints: the certificate is not a CA")
        return found
    have = certificate_fields(public)
    if have["common_name"] != request["common_name"]:
        found.append(f"common_name: the site's certificate has {have['common_name']!r}, "
                     f"the catalog asks for {request['common_name']!r}")
    for field in ("groups", "hosts"):
        lacks = [v for v in request[field] if v not in have[field]]
        extra = [v for v in have[field] if v not in request[field]]
        if lacks or extra:
            found.append(f"{field}: the site's certificate "
                         + " and ".join(([f"lacks {lacks!r}"] if lacks else []) + ([f"has extra {extra!r}"] if extra else [])))
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem.encode())
    try:
        public.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        found.append(f"issuer: not issued by the current CA {request['ca']!r}")
    return found


def fulfil(request: dict, where: dict, ca: dict | None = None, key=None) -> dict:
    """The material for one request: ``{"public": PEM, "private": PEM, "provided": bool}``.

    ``ca`` is the fulfilled CA of a certificate request; ``key`` a private key made ahead for
    it. Site-provided material is checked with :func:`differences` and reused unchanged; a
    mismatch raises :class:`PromenadeError` located by ``where`` (see :func:`plan`).
    """
    if request.get("provided"):
        found = differences(request, ca["public"] if ca else None)
        if found:
            raise PromenadeError(drift_problem(request, where, found))
        return {"public": request["provided"]["public"], "private": request["provided"]["private"],
                "provided": True}
    if request["kind"] == "ca":
        public, private = generate_ca(request, key)
    elif request["kind"] == "cert":
        public, private = issue_certificate(request, ca["public"], ca["private"], key)
    else:
        public, private = generate_keypair(request, key)
    return {"public": public, "private": private, "provided": False}


def fulfil_all(requests: list[dict], locations: list[dict]) -> list[tuple[dict, dict]]:
    """Fulfil every request of :func:`plan` in order; report every mismatch at once."""
    cas: dict[str, dict] = {}
    fulfilled, problems = [], []
    for request, where in zip(requests, locations):
        if request["kind"] == "cert" and request["ca"] not in cas:
            continue  # its CA failed and is reported already
        try:
            material = fulfil(request, where, cas.get(request.get("ca")))
        except PromenadeError as exc:
            problems.extend(exc.problems)
            continue
        if request["kind"] == "ca":
            cas[request["name"]] = material
        fulfilled.append((request, material))
    if problems:
        raise PromenadeError(problems)
    return fulfilled


def drift_problem(request: dict, where: dict, found: list[str]) -> Problem:
    """The error for site-provided material that no longer matches its catalog entry."""
    public_schema, private_schema = PAIRS[request["kind"]]
    provided = where.get("provided", {})
    return Problem(
        f"{public_schema.split('/')[1]} {request['name']!r} provided by the site does not match its "
        f"PKICatalog entry ({where['catalog']} {where['path']}): {'; '.join(found)}. To renew it, delete "
        f"the {public_schema} and {private_schema} documents named {request['name']!r} from the site "
        "and run `doit certs`: Promenade then issues a new one into certificates.yaml",
        file=provided.get("file"), line=provided.get("line"), schema=public_schema, name=request["name"])


def documents(request: dict, material: dict) -> list[dict]:
    """The two Deckhand documents (public half, private half) of fulfilled material."""
    return [pki_document(schema, request["name"], material[half])
            for schema, half in zip(PAIRS[request["kind"]], ("public", "private"))]


def certificates_yaml(fulfilled: Iterable[tuple[dict, dict]], include_provided: bool = False) -> str:
    """``certificates.yaml``: the documents of every ``(request, material)``, grouped by schema.

    Site-provided material is left out unless ``include_provided`` (the site already has it).
    """
    docs = [doc for request, material in fulfilled if include_provided or not material["provided"]
            for doc in documents(request, material)]
    docs.sort(key=lambda doc: PKI_SCHEMAS.index(doc["schema"]))  # stable: catalog order within a schema
    return dump_yaml(docs, many=True) if docs else ""


def pki_document(schema: str, name: str, pem: str) -> dict:
    """A Deckhand document as Promenade writes it into certificates.yaml."""
    return {"schema": schema, "data": pem,
            "metadata": {"schema": "metadata/Document/v1", "name": name,
                         "layeringDefinition": {"abstract": False, "layer": "site"},
                         "storagePolicy": "cleartext"}}


# --- lifecycle -------------------------------------------------------------------------------

def expiry_row(request: dict, material: dict, warn_days: int, now: datetime.datetime | None = None) -> dict:
    """One line of the expiry report for a CA or certificate."""
    cert = x509.load_pem_x509_certificate(material["public"].encode())
    now = now or _now()
    left = cert.not_valid_after_utc - now
    days = left.days
    status = "expired" if left.total_seconds() <= 0 else "warning" if days < warn_days else "ok"
    return {"name": request["name"], "kind": request["kind"], "issuer": cert.issuer.rfc4514_string(),
            "not_after": cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"), "days_left": days,
            "status": status, "source": "site" if material.get("provided") else "generated"}


def format_table(rows: list[dict]) -> str:
    """The expiry report as an aligned text table."""
    columns = ("name", "kind", "issuer", "not_after", "days_left", "status", "source")
    cells = [[c.upper().replace("_", " ") for c in columns]] + [[str(r[c]) for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in cells)
