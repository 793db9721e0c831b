"""Unit tests of promenade.validation: schema files, compiled validators, formats and messages."""

import datetime

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from promenade import validation
from promenade.documents import Document, load_site, parse_stream
from promenade.errors import PromenadeError
from promenade.validation import BUILTIN_SCHEMAS, COMPILED_FORMATS, builtin_validator, check_site, formats, validate


def docs(text):
    return parse_stream(text, "site.yaml")


def messages(text):
    return [(p.path, p.message) for p in validate(docs(text))
            if "expected exactly one" not in p.message]


def test_every_builtin_schema_is_valid_and_every_file_is_used():
    for schema in BUILTIN_SCHEMAS:
        validator = builtin_validator(schema)
        type(validator).check_schema(validator.schema)
    files = {path.stem for path in validation.SCHEMA_DIR.glob("*.yaml")}
    assert files == set(BUILTIN_SCHEMAS.values()) | {"definitions"}


def _subschemas(node):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _subschemas(value)
    elif isinstance(node, list):
        for value in node:
            yield from _subschemas(value)


def test_custom_messages_name_a_keyword_of_their_own_schema():
    for path in validation.SCHEMA_DIR.glob("*.yaml"):
        for node in _subschemas(yaml.safe_load(path.read_text())):
            for keyword in node.get("x-messages", {}):
                assert keyword in node, f"{path.name}: x-messages.{keyword} has no {keyword}"


def test_validators_are_compiled_once():
    assert builtin_validator("promenade/Genesis/v1") is builtin_validator("promenade/Genesis/v1")
    schema = ("schema: deckhand/DataSchema/v1\nmetadata: {name: x/Y/v1}\ndata: {type: object}\n"
              "---\nschema: x/Y/v1\nmetadata: {name: y}\ndata: []\n")
    validate(docs(schema))
    before = validation._site_validator.cache_info().hits
    validate(docs(schema))
    assert validation._site_validator.cache_info().hits == before + 1


@pytest.mark.parametrize("value,ok", [
    ("10.96.0.0/16", True), ("fd00:10::/64", True), ("0.0.0.0/0", True),
    ("10.96.0.1/16", False), ("10.96.0.0", False), ("10.96.0.0/33", False), ("ten/8", False),
])
def test_cidr_format(value, ok):
    assert formats().conforms(value, "cidr") is ok
    assert COMPILED_FORMATS["cidr"](value) is ok


def test_type_names_in_messages():
    text = ("schema: promenade/Docker/v1\nmetadata: {name: d}\ndata: {config: true}\n---\n"
            "schema: promenade/Kubelet/v1\nmetadata: {name: k}\ndata: {images: {pause: 3.9}}\n---\n"
            "schema: promenade/EncryptionPolicy/v1\nmetadata: {name: e}\ndata:\n")
    assert messages(text) == [
        (".data.config", "expected a mapping, got a boolean (true/false)"),
        (".data.images.pause", "expected a string, got a number"),
        (".data", "expected a mapping, got null"),
    ]


def test_booleans_are_not_integers():
    text = ("schema: promenade/PKICatalog/v1\nmetadata: {name: p}\n"
            "data: {validity: {ca_days: true}}\n")
    assert messages(text) == [(".data.validity.ca_days",
                               "expected an integer, got a boolean (true/false)")]


def test_abstract_and_non_mapping_documents_are_skipped():
    text = ("schema: promenade/Docker/v1\nmetadata: {name: d, layeringDefinition: {abstract: true}}\n"
            "data: {}\n---\n- a list\n")
    assert messages(text) == []


def test_check_site_raises_every_problem():
    with pytest.raises(PromenadeError) as caught:
        check_site(docs("schema: promenade/Docker/v1\nmetadata: {name: d}\ndata: {}\n"))
    assert [p.message for p in caught.value.problems] == [
        "missing required key 'config'",
        "there are 0 promenade/Genesis/v1 documents; expected exactly one",
        "there are 0 promenade/HostSystem/v1 documents; expected exactly one",
        "there are 0 promenade/Kubelet/v1 documents; expected exactly one",
        "there are 0 promenade/KubernetesNetwork/v1 documents; expected exactly one",
    ]
    assert "site.yaml:3 [promenade/Docker/v1 d] at .data.config" in str(caught.value)


def test_check_site_accepts_an_example_site():
    assert check_site(load_site("/work/shared/examples/promenade/simple")) is None


def test_data_schema_without_dialect_is_draft4():
    text = ("schema: deckhand/DataSchema/v1\nmetadata: {name: x/Y/v1}\n"
            "data: {properties: {n: {minimum: 1, exclusiveMinimum: true}}}\n---\n"
            "schema: x/Y/v1\nmetadata: {name: y}\ndata: {n: 1}\n")
    assert messages(text) == [(".data.n", "expected a number > 1, got 1")]


def test_data_schema_never_fetches_remote_references():
    text = ("schema: deckhand/DataSchema/v1\nmetadata: {name: x/Y/v1}\n"
            "data: {$ref: 'http://192.0.2.1/schema.json'}\n---\n"
            "schema: x/Y/v1\nmetadata: {name: y}\ndata: {}\n")
    [(path, message)] = messages(text)
    assert path == ".data" and "unresolvable $ref" in message


def test_data_schema_must_be_a_mapping():
    text = "schema: deckhand/DataSchema/v1\nmetadata: {name: x/Y/v1}\ndata: [1]\n"
    assert messages(text) == [(".data", "expected a JSON schema mapping, got a list")]


def test_unknown_keys_are_each_reported_at_their_own_line():
    text = "schema: promenade/Docker/v1\nmetadata: {name: d}\ndata:\n  config: {}\n  a: 1\n  b: 2\n"
    problems = [p for p in validate(docs(text)) if p.name == "d"]
    assert [(p.line, p.path, p.message) for p in problems] == [
        (5, ".data.a", "unknown key 'a'; expected one of: config"),
        (6, ".data.b", "unknown key 'b'; expected one of: config"),
    ]


def test_unknown_keys_respect_pattern_properties():
    text = ("schema: deckhand/DataSchema/v1\nmetadata: {name: x/Y/v1}\n"
            "data: {additionalProperties: false, patternProperties: {'^x-': {}}}\n---\n"
            "schema: x/Y/v1\nmetadata: {name: y}\ndata: {x-note: 1, note: 2}\n")
    assert messages(text) == [(".data.note", "unknown key 'note'")]


def _pems():
    """Real PEM encodings of every form the secret kinds must accept."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(ec_key.public_key()).serial_number(1).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(ec_key, hashes.SHA256()))
    enc = serialization.Encoding.PEM
    key = lambda k, fmt: k.private_bytes(enc, fmt, serialization.NoEncryption()).decode()  # noqa: E731
    pub = lambda k, fmt: k.public_key().public_bytes(enc, fmt).decode()  # noqa: E731
    certificate = cert.public_bytes(enc).decode()
    return {
        "Certificate": [certificate, certificate + certificate],
        "CertificateAuthority": [certificate],
        "CertificateKey": [key(rsa_key, serialization.PrivateFormat.TraditionalOpenSSL),
                           key(ec_key, serialization.PrivateFormat.TraditionalOpenSSL)],
        "CertificateAuthorityKey": [key(rsa_key, serialization.PrivateFormat.PKCS8)],
        "PrivateKey": [key(ec_key, serialization.PrivateFormat.PKCS8)],
        "PublicKey": [pub(rsa_key, serialization.PublicFormat.SubjectPublicKeyInfo),
                      pub(rsa_key, serialization.PublicFormat.PKCS1)],
    }


def test_secret_kinds_accept_real_pem_and_reject_the_wrong_block():
    pems = _pems()
    for kind, values in pems.items():
        for value in values:
            assert secret_problems(kind, value) == [], kind
        wrong = pems["PublicKey"][0] if kind != "PublicKey" else pems["Certificate"][0]
        [problem] = secret_problems(kind, wrong)
        assert "PEM form" in problem.message and wrong not in str(problem)


def secret_problems(kind, value):
    doc = Document({"schema": f"deckhand/{kind}/v1", "metadata": {"name": "s"}, "data": value})
    return [p for p in validate([doc]) if p.name == "s"]


def test_values_of_encrypted_documents_are_not_quoted():
    text = ("schema: promenade/KubernetesNetwork/v1\n"
            "metadata: {name: n, storagePolicy: encrypted}\n"
            "data: {dns: {cluster_domain: cluster.local, service_ip: s3cr3t}}\n")
    problems = [p for p in validate(docs(text)) if p.name == "n"]
    assert [p.path for p in problems] == [".data.dns.service_ip", ".data.kubernetes"]
    assert not any("s3cr3t" in str(p) for p in problems)


def test_sha256_pin_is_accepted_on_downloads_and_rejected_elsewhere():
    text = ("schema: promenade/HostSystem/v1\nmetadata: {name: hs, schema: metadata/Document/v1,"
            " layeringDefinition: {layer: site}}\ndata:\n  files:\n"
            f"    - {{path: /a, mode: 0644, url: 'http://127.0.0.1/x', sha256: {'a' * 64}}}\n"
            f"    - {{path: /b, mode: 0644, content: x, sha256: {'b' * 64}}}\n")
    problems = [p for p in validation.validate(parse_stream(text, "h.yaml")) if p.path and p.path.startswith(".data.files")]
    assert [(p.line, p.path, p.message) for p in problems] == [
        (6, ".data.files[1]", "expected url or tar_url with sha256 (it pins downloaded content)")]


def test_remembered_validity_is_keyed_by_schema_data_and_rules():
    """A render remembers which documents passed; only exactly those are not checked again."""
    text = "schema: promenade/Docker/v1\nmetadata: {schema: metadata/Document/v1, name: docker}\ndata: {config: {}}\n"
    doc = parse_stream(text, "docker.yaml")[0]
    bad = parse_stream(text.replace("{config: {}}", "{config: 7}"), "docker.yaml")[0]
    assert validation.validity_key(doc) != validation.validity_key(bad)
    assert validation._builtin_problems(doc) == [] and validation.validity_key(doc) in validation._valid
    assert validation._builtin_problems(bad), "an invalid document is reported"
    validation.remember_valid([validation.validity_key(bad)])  # what a tampered memory would claim
    try:
        assert validation._builtin_problems(bad) == []
    finally:
        validation.forget_valid()
    assert validation._builtin_problems(bad)


def test_render_tasks_remember_what_was_valid(tmp_path):
    from doitrun import ROOT, doit

    out = tmp_path / "build"
    doit("render", site=f"{ROOT}/site", out=out)
    remembered = out / "state" / "site" / "valid.json"
    keys = __import__("json").loads(remembered.read_text())
    assert len(keys) > 5 and keys == sorted(set(keys))
    assert oct(remembered.stat().st_mode & 0o777) == "0o600"
