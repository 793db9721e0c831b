"""Validation of rendered documents: built-in JSON schemas, site DataSchemas and design rules.

Every ``promenade/*/v1`` kind, the ``deckhand`` secret kinds and ``deckhand/LayeringPolicy/v1``
are checked against the schemas in ``promenade/schemas/`` (strict: unknown keys are errors).
Documents whose schema is named by a ``deckhand/DataSchema/v1`` document of the site are also
checked against that document's data. Design rules then check what a schema cannot: exactly one
of each site-wide kind, unique nodes, and consistent address ranges. Each validator is compiled
once per process and reused. Built-in schemas are checked in two steps (:mod:`.schemacheck`):
jsonschema-rs decides, python-jsonschema explains what it rejects.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator
from urllib.parse import unquote, urlsplit

from .documents import Document
from .errors import Problem, PromenadeError
from .schemacheck import SchemaCheck
from .yamlio import load_yaml

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError
    from referencing import Registry

SCHEMA_DIR = Path(__file__).with_name("schemas")
DATA_SCHEMA = "deckhand/DataSchema/v1"
GENESIS = "promenade/Genesis/v1"
NODE = "promenade/KubernetesNode/v1"
NETWORK = "promenade/KubernetesNetwork/v1"
CATALOG = "promenade/PKICatalog/v1"

PROMENADE_KINDS = ("Docker", "EncryptionPolicy", "Genesis", "HostSystem", "Kubelet",
                   "KubernetesNetwork", "KubernetesNode", "PKICatalog")
SECRET_KINDS = ("Certificate", "CertificateAuthority", "CertificateAuthorityKey", "CertificateKey",
                "Passphrase", "PrivateKey", "PublicKey")
#: document schema -> schema file (without .yaml) in ``promenade/schemas/``
BUILTIN_SCHEMAS = {
    **{f"promenade/{kind}/v1": kind for kind in PROMENADE_KINDS},
    **{f"deckhand/{kind}/v1": kind for kind in SECRET_KINDS},
    "deckhand/LayeringPolicy/v1": "LayeringPolicy",
}
#: kinds a site must have exactly one of
SINGLETONS = tuple(f"promenade/{kind}/v1" for kind in
                   ("Genesis", "HostSystem", "Kubelet", "KubernetesNetwork", "Docker"))

_TYPE_NAMES = {"object": "a mapping", "array": "a list", "string": "a string",
               "integer": "an integer", "number": "a number", "boolean": "a boolean (true/false)",
               "null": "null"}
_FORMAT_NAMES = {"ipv4": "an IPv4 address such as 192.168.0.10",
                 "ipv6": "an IPv6 address",
                 "cidr": "a CIDR network such as 10.96.0.0/16 (no host bits set)"}

def _is_cidr(value: Any) -> bool:
    """An IPv4 or IPv6 network with an explicit prefix length and no host bits set."""
    if not isinstance(value, str):
        return True
    if "/" not in value:
        raise ValueError(f"{value!r} has no prefix length")
    ipaddress.ip_network(value, strict=True)
    return True


def _is_ipv4(value: Any) -> bool:
    """A dotted-quad IPv4 address (what python-jsonschema's ``ipv4`` accepts)."""
    if isinstance(value, str):
        ipaddress.IPv4Address(value)
    return True


def _conforms(check: Callable[[Any], bool]) -> Callable[[str], bool]:
    """``check`` as a predicate: False where it raises ValueError (jsonschema-rs format callbacks)."""
    def conforms(value: str) -> bool:
        try:
            return check(value)
        except ValueError:
            return False
    return conforms


#: the formats the built-in schemas use, as the compiled validator checks them
COMPILED_FORMATS = {"ipv4": _conforms(_is_ipv4), "cidr": _conforms(_is_cidr)}


@functools.cache
def formats():
    """The reference validator's format checker: the standard formats plus ``cidr``."""
    from jsonschema import Draft202012Validator, FormatChecker

    checker = FormatChecker(Draft202012Validator.FORMAT_CHECKER.checkers)
    checker.checks("cidr", raises=ValueError)(_is_cidr)
    return checker


# --- compiled validators ----------------------------------------------------------------------
@functools.cache
def _schema_file(name: str) -> dict:
    """The contents of ``promenade/schemas/<name>`` (read once, shared by both validators)."""
    with open(SCHEMA_DIR / name, encoding="utf-8") as handle:
        return load_yaml(handle.read())


def _retrieve(uri: str) -> dict:
    """``$ref`` targets for the compiled validator: built-in schema files only, nothing fetched."""
    path = Path(unquote(urlsplit(uri).path))
    if path.parent != SCHEMA_DIR or not path.is_file():
        raise ValueError(f"{uri} is not a built-in schema file")
    return _schema_file(path.name)


@functools.cache
def _registry() -> Registry:
    """Every schema file, addressable as ``<file>.yaml`` from ``$ref``."""
    from referencing import Registry, Resource

    return Registry().with_resources(
        (path.name, Resource.from_contents(_schema_file(path.name))) for path in sorted(SCHEMA_DIR.glob("*.yaml")))


@functools.cache
def builtin_validator(schema: str):
    """The reference validator for a built-in document schema (e.g. ``promenade/Genesis/v1``)."""
    from jsonschema.validators import validator_for

    contents = _schema_file(f"{BUILTIN_SCHEMAS[schema]}.yaml")
    cls = validator_for(contents)
    return cls(contents, registry=_registry(), format_checker=formats())


@functools.cache
def builtin_check(schema: str) -> SchemaCheck:
    """The two-step check (:mod:`promenade.schemacheck`) of a built-in document schema."""
    name = f"{BUILTIN_SCHEMAS[schema]}.yaml"
    return SchemaCheck(_schema_file(name), functools.partial(builtin_validator, schema),
                       base_uri=(SCHEMA_DIR / name).as_uri(), retriever=_retrieve,
                       validate_formats=True, formats=COMPILED_FORMATS)


@functools.cache
def _site_validator(schema_json: str):
    """A compiled validator for a site DataSchema (given as canonical JSON, so it is hashable).

    Schemas without ``$schema`` are read as draft-04, like Deckhand does. ``$ref`` resolves
    within the schema and to the standard metaschemas only: nothing is ever fetched.
    """
    from jsonschema import Draft4Validator
    from jsonschema.validators import validator_for
    from jsonschema_specifications import REGISTRY as METASCHEMAS

    schema = json.loads(schema_json)
    cls = validator_for(schema, default=Draft4Validator)
    cls.check_schema(schema)
    return cls(schema, registry=METASCHEMAS, format_checker=formats())


# --- jsonschema errors -> problems ------------------------------------------------------------
def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_name(value: Any) -> str:
    from jsonschema import Draft202012Validator

    for kind in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if Draft202012Validator.TYPE_CHECKER.is_type(value, kind):
            return _TYPE_NAMES[kind]
    return type(value).__name__


def _describe(error: ValidationError, reveal: bool) -> Iterator[tuple[list, str]]:
    """(path inside data, message) pairs for one jsonschema error.

    ``reveal`` False keeps the offending value out of messages (secret documents).
    """
    path = list(error.absolute_path)
    keyword, expected, instance = error.validator, error.validator_value, error.instance
    schema = error.schema if isinstance(error.schema, dict) else {}
    got = f", got {_show(instance)}" if reveal else ""
    custom = schema.get("x-messages", {}).get(keyword)
    if keyword == "additionalProperties" and isinstance(instance, dict):
        allowed = schema.get("properties", {})
        patterns = list(schema.get("patternProperties", {}))
        for key in instance:
            if key not in allowed and not any(re.search(p, key) for p in patterns):
                choices = f"; expected one of: {', '.join(sorted(allowed))}" if allowed else ""
                yield path + [key], f"unknown key {key!r}{choices}"
    elif keyword == "required" and isinstance(instance, dict):
        for key in expected:
            if key not in instance:
                yield path + [key], f"missing required key {key!r}"
    elif keyword == "dependentRequired" and isinstance(instance, dict):
        for key, needs in expected.items():
            for need in needs:
                if key in instance and need not in instance:
                    yield path + [key], f"{key!r} also requires {need!r}"
    elif custom:
        yield path, custom + (got if keyword in ("pattern", "format") else "")
    elif keyword == "type":
        wanted = expected if isinstance(expected, list) else [expected]
        names = " or ".join(_TYPE_NAMES.get(t, t) for t in wanted)
        yield path, f"expected {names}, got {_type_name(instance)}"
    elif keyword == "enum":
        yield path, f"expected one of {', '.join(map(str, expected))}{got}"
    elif keyword == "format":
        yield path, f"expected {_FORMAT_NAMES.get(expected, expected)}{got}"
    elif keyword == "pattern":
        yield path, f"expected a string matching {expected}{got}"
    elif keyword in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        if schema.get(f"exclusive{keyword[0].upper()}{keyword[1:]}") is True:  # draft-04 form
            keyword = f"exclusive{keyword[0].upper()}{keyword[1:]}"
        sign = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}
        yield path, f"expected a number {sign[keyword]} {expected}{got}"
    elif keyword == "minItems":
        yield path, f"expected at least {expected} item{'s' if expected != 1 else ''}"
    elif keyword == "minLength":
        yield path, ("expected a non-empty string" if expected == 1
                     else f"expected at least {expected} characters")
    elif keyword == "maxLength":
        yield path, f"expected at most {expected} characters"
    elif keyword == "uniqueItems":
        yield path, "expected unique items, found duplicates"
    elif keyword in ("minProperties", "maxProperties"):
        bound = "at least" if keyword == "minProperties" else "at most"
        yield path, f"expected {bound} {expected} key{'s' if expected != 1 else ''}"
    else:
        yield path, error.message if reveal else f"failed the {keyword!r} rule of the schema"


_valid: set[str] = set()  # validity keys of documents a built-in schema accepted (see validity_key)


@functools.lru_cache(maxsize=None)
def _rules_version() -> bytes:
    """Digest of the built-in schemas and of this module: a new version of either forgets every
    remembered validity."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    for path in sorted(SCHEMA_DIR.glob("*.yaml")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.digest()


def validity_key(doc: Document) -> str:
    """What identifies ``doc`` for its built-in schema check: the rules' version, schema and data."""
    return hashlib.sha1(_rules_version() + repr((doc.schema, doc.data)).encode()).hexdigest()


def remember_valid(keys: Iterable[str]) -> None:
    """Trust documents with these :func:`validity_key` values to pass their built-in schema
    (a render remembers what it found valid, so the next render checks only what changed)."""
    _valid.update(keys)


def forget_valid() -> None:
    """Check every document again (what a fresh process does; for measurements and tests)."""
    _valid.clear()


def _builtin_problems(doc: Document, valid_keys: set[str] | None = None) -> list[Problem]:
    """Problems of ``doc`` under its built-in schema; remembered valid documents are not checked
    again (a process renders a site twice, before and after certificates). The key of a valid
    document is added to ``valid_keys``."""
    key = validity_key(doc)
    problems = [] if key in _valid else _schema_problems(doc, builtin_check(doc.schema).errors(doc.data),
                                                         _reveal(doc))
    if not problems:
        _valid.add(key)
        if valid_keys is not None:
            valid_keys.add(key)
    return problems


def _schema_problems(doc: Document, errors: Iterable[ValidationError], reveal: bool) -> list[Problem]:
    problems = []
    for error in errors:
        for path, message in _describe(error, reveal):
            problems.append(doc.problem(message, ["data", *path]))
    return problems


def _reveal(doc: Document) -> bool:
    secret = doc.schema in BUILTIN_SCHEMAS and BUILTIN_SCHEMAS[doc.schema] in SECRET_KINDS
    return not secret and doc.metadata.get("storagePolicy") != "encrypted"


# --- site DataSchemas -------------------------------------------------------------------------
def _site_schemas(docs: list[Document], problems: list[Problem]) -> dict[str, Any]:
    """Target schema -> compiled validator, from the site's DataSchema documents."""
    found: dict[str, Document] = {}
    validators = {}
    for doc in docs:
        if doc.schema != DATA_SCHEMA:
            continue
        if doc.name in found:
            first = found[doc.name]
            problems.append(doc.problem(f"a DataSchema for {doc.name!r} is already defined at "
                                        f"{first.file}:{first.line}", ["metadata", "name"]))
            continue
        found[doc.name] = doc
        if not isinstance(doc.data, dict):
            problems.append(doc.problem(f"expected a JSON schema mapping, got {_type_name(doc.data)}",
                                        ["data"]))
            continue
        from jsonschema.exceptions import SchemaError

        try:
            validators[doc.name] = _site_validator(json.dumps(doc.data, sort_keys=True))
        except SchemaError as exc:
            problems.append(doc.problem(f"invalid JSON schema: {exc.message}",
                                        ["data", *exc.absolute_path]))
        except (TypeError, ValueError) as exc:
            problems.append(doc.problem(f"invalid JSON schema: {exc}", ["data"]))
    return validators


def _site_schema_problems(doc: Document, validator) -> list[Problem]:
    from referencing.exceptions import Unresolvable

    try:
        return _schema_problems(doc, validator.iter_errors(doc.data), _reveal(doc))
    except Unresolvable as exc:
        return [doc.problem(f"the site DataSchema for {doc.schema} has an unresolvable $ref: "
                            f"{exc}", ["data"])]


# --- design rules -----------------------------------------------------------------------------
def _where(doc: Document, path: Iterable[Any] = ()) -> str:
    return f"{doc.file or '<site>'}:{doc.line_of(path)}"


def _cardinality(docs: list[Document]) -> list[Problem]:
    problems = []
    for schema in SINGLETONS:
        found = [doc for doc in docs if doc.schema == schema]
        if not found:
            problems.append(Problem(f"there are 0 {schema} documents; expected exactly one",
                                    schema=schema))
        elif len(found) > 1:
            places = ", ".join(_where(doc) for doc in found)
            problems.append(found[1].problem(
                f"there are {len(found)} {schema} documents ({places}); expected exactly one"))
    return problems


def _unique_nodes(docs: list[Document]) -> list[Problem]:
    """Node names, hostnames and IPs must not repeat across the genesis node and the nodes."""
    problems = []
    nodes = [doc for doc in docs if doc.schema in (GENESIS, NODE)]
    checks = [(["metadata", "name"], "node name", [doc for doc in nodes if doc.schema == NODE]),
              (["data", "hostname"], "hostname", nodes),
              (["data", "ip"], "IP address", nodes)]
    for path, label, candidates in checks:
        seen: dict[str, Document] = {}
        for doc in candidates:
            value = doc.raw.get(path[0], {})
            value = value.get(path[1]) if isinstance(value, dict) else None
            if not isinstance(value, str):
                continue
            if value in seen:
                first = seen[value]
                problems.append(doc.problem(f"{label} {value!r} is also used by {first.schema} "
                                            f"{first.name} ({_where(first, path)})", path))
            else:
                seen[value] = doc
    return problems


def _network_ranges(docs: list[Document]) -> list[Problem]:
    """Service addresses inside the service range; pod and service ranges disjoint."""
    problems = []
    for doc in docs:
        if doc.schema != NETWORK or not isinstance(doc.data, dict):
            continue
        k8s = doc.data.get("kubernetes") if isinstance(doc.data.get("kubernetes"), dict) else {}
        dns = doc.data.get("dns") if isinstance(doc.data.get("dns"), dict) else {}
        try:
            service = ipaddress.ip_network(k8s.get("service_cidr"), strict=True)
        except (TypeError, ValueError):
            continue  # reported by the schema
        for path, value in ((["data", "kubernetes", "service_ip"], k8s.get("service_ip")),
                            (["data", "dns", "service_ip"], dns.get("service_ip"))):
            try:
                inside = ipaddress.ip_address(value) in service
            except (TypeError, ValueError):
                continue
            if not inside:
                problems.append(doc.problem(f"{value} is outside kubernetes.service_cidr {service}",
                                            path))
        try:
            pods = ipaddress.ip_network(k8s.get("pod_cidr"), strict=True)
        except (TypeError, ValueError):
            continue
        if pods.version == service.version and pods.overlaps(service):
            problems.append(doc.problem(f"pod_cidr {pods} overlaps service_cidr {service}",
                                        ["data", "kubernetes", "pod_cidr"]))
    return problems


def _pki_options(docs: list[Document]) -> list[Problem]:
    """Site-wide PKI options may be set in several catalogs, but only to the same value."""
    problems = []
    for option in ("key_algorithm", "validity"):
        first = None
        for doc in docs:
            if doc.schema != CATALOG or not isinstance(doc.data, dict) or option not in doc.data:
                continue
            if first is None:
                first = doc
            elif doc.data[option] != first.data[option]:
                problems.append(doc.problem(
                    f"{option} {_show(doc.data[option])} differs from {_show(first.data[option])} "
                    f"in {first.schema} {first.name} ({_where(first, ['data', option])})",
                    ["data", option]))
    return problems


# --- entry points -----------------------------------------------------------------------------
def _checked(docs: Iterable[Document]) -> list[Document]:
    """The documents validation looks at: concrete mappings (abstract ones only feed layering)."""
    return [doc for doc in docs if isinstance(doc.raw, dict) and not doc.abstract]


def validate(docs: list[Document], valid_keys: set[str] | None = None) -> list[Problem]:
    """Every problem of the rendered documents, in document order, then the site-wide rules.

    ``valid_keys`` receives the :func:`validity_key` of each document its built-in schema
    accepts: what a render that passed validation remembers (:func:`remember_valid`).
    """
    docs = _checked(docs)
    problems: list[Problem] = []
    site = _site_schemas(docs, problems)
    for doc in docs:
        found = []
        if doc.schema in BUILTIN_SCHEMAS:
            found += _builtin_problems(doc, valid_keys)
        elif (doc.schema or "").startswith("promenade/") and doc.schema not in site:
            kinds = ", ".join(s for s in BUILTIN_SCHEMAS if s.startswith("promenade/"))
            found.append(doc.problem(f"unknown document kind {doc.schema!r}; expected one of: "
                                     f"{kinds}", ["schema"]))
        if doc.schema in site:
            found += _site_schema_problems(doc, site[doc.schema])
        problems += sorted(dict.fromkeys(found), key=lambda p: (p.line or 0, p.path or ""))
    return (problems + _cardinality(docs) + _unique_nodes(docs) + _network_ranges(docs)
            + _pki_options(docs))


def check_site(docs: list[Document]) -> None:
    """Raise :class:`PromenadeError` with every problem, if there are any."""
    problems = validate(docs)
    if problems:
        raise PromenadeError(problems)
