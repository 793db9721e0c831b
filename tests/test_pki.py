"""PKI generation, checking and reuse (promenade.pki), without doit."""

import datetime
import ipaddress

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from promenade import pki
from promenade.documents import parse_stream
from promenade.errors import PromenadeError

CATALOG = """\
schema: promenade/PKICatalog/v1
metadata:
  schema: metadata/Document/v1
  name: cluster-certificates
  layeringDefinition: {abstract: false, layer: site}
data:
  %(options)s
  certificate_authorities:
    kubernetes:
      description: CA for Kubernetes components
      certificates:
        - document_name: apiserver
          common_name: apiserver
          hosts: [localhost, 127.0.0.1, 10.96.0.1]
          kubernetes_service_names: [kubernetes.default.svc.cluster.local]
        - document_name: admin
          common_name: admin
          groups: [system:masters, extra:group]
  keypairs:
    - name: service-account
"""


def catalog(options=""):
    return parse_stream(CATALOG % {"options": options}, "site/pki.yaml")


def load(material):
    cert = x509.load_pem_x509_certificate(material["public"].encode())
    key = pki.serialization.load_pem_private_key(material["private"].encode(), password=None)
    return cert, key


@pytest.fixture(scope="module")
def rsa_site():
    return pki.fulfil_all(*pki.plan(catalog()))


def test_service_names_expand_to_every_dot_prefix():
    assert pki.expand_service_names(["kubernetes.default.svc.cluster.local"]) == [
        "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster",
        "kubernetes.default.svc.cluster.local"]


def test_plan_requests_in_catalog_order_with_defaults():
    requests, locations = pki.plan(catalog())
    assert [(r["kind"], r["name"]) for r in requests] == [
        ("ca", "kubernetes"), ("cert", "apiserver"), ("cert", "admin"), ("keypair", "service-account")]
    assert requests[0] == {"kind": "ca", "name": "kubernetes", "algorithm": "rsa-2048", "days": 3650}
    assert requests[1]["days"] == 365
    assert locations[2] == {"file": "site/pki.yaml", "line": 16, "catalog": "cluster-certificates",
                            "path": ".data.certificate_authorities.kubernetes.certificates[1]"}


def test_generated_certificates_chain_and_carry_exactly_the_catalog_fields(rsa_site):
    (ca_req, ca_mat), (api_req, api_mat), (admin_req, admin_mat), _ = rsa_site
    ca, ca_key = load(ca_mat)
    assert ca.subject.rfc4514_string() == "CN=kubernetes,O=Kubernetes"
    ca.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    assert (ca.not_valid_after_utc - ca.not_valid_before_utc).days == 3650
    assert ca_mat["private"].startswith("-----BEGIN RSA PRIVATE KEY-----")

    api, api_key = load(api_mat)
    api.verify_directly_issued_by(ca)
    assert api.public_key().public_numbers() == api_key.public_key().public_numbers()
    assert isinstance(api_key, rsa.RSAPrivateKey) and api_key.key_size == 2048
    assert (api.not_valid_after_utc - api.not_valid_before_utc).days == 365
    sans = api.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [
        "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
        "kubernetes.default.svc.cluster", "kubernetes.default.svc.cluster.local"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"),
                                                        ipaddress.ip_address("10.96.0.1")]
    assert api.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert list(api.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    leaf_usage = api.extensions.get_extension_for_class(x509.KeyUsage).value
    assert leaf_usage.digital_signature and leaf_usage.key_encipherment and not leaf_usage.key_cert_sign
    aki = api.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    assert aki == ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest

    admin, _ = load(admin_mat)
    assert [a.value for a in admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == [
        "system:masters", "extra:group"]
    assert admin.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "admin"
    with pytest.raises(x509.ExtensionNotFound):
        admin.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert admin.serial_number != api.serial_number


def test_keypair_is_spki_and_pkcs8(rsa_site):
    _, material = rsa_site[3]
    public = pki.serialization.load_pem_public_key(material["public"].encode())
    private = pki.serialization.load_pem_private_key(material["private"].encode(), password=None)
    assert material["public"].startswith("-----BEGIN PUBLIC KEY-----")
    assert material["private"].startswith("-----BEGIN PRIVATE KEY-----")
    assert public.public_numbers() == private.public_key().public_numbers()


@pytest.mark.parametrize("options, key_type, size", [
    ("key_algorithm: ecdsa-p256\n  validity: {ca_days: 100, leaf_days: 30}", ec.EllipticCurvePrivateKey, 256),
    ("key_algorithm: rsa-3072", rsa.RSAPrivateKey, 3072),
])
def test_key_algorithm_and_validity_options(options, key_type, size):
    (_, ca_mat), (_, api_mat), _, (_, pair) = pki.fulfil_all(*pki.plan(catalog(options)))
    ca, ca_key = load(ca_mat)
    api, api_key = load(api_mat)
    for key in (ca_key, api_key):
        assert isinstance(key, key_type) and key.key_size == size
    api.verify_directly_issued_by(ca)
    assert api.public_key().public_numbers() == api_key.public_key().public_numbers()
    if key_type is ec.EllipticCurvePrivateKey:
        assert ca_mat["private"].startswith("-----BEGIN EC PRIVATE KEY-----")
        assert (ca.not_valid_after_utc - ca.not_valid_before_utc).days == 100
        assert (api.not_valid_after_utc - api.not_valid_before_utc).days == 30
        assert not api.extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment
    assert pair["private"].startswith("-----BEGIN PRIVATE KEY-----")


def test_bad_options_are_reported_with_their_path():
    with pytest.raises(PromenadeError) as err:
        pki.plan(catalog("key_algorithm: dsa-1024\n  validity: {leaf_days: 0}"))
    assert [p.path for p in err.value.problems] == [".data.key_algorithm", ".data.validity.leaf_days"]
    assert "key_algorithm 'dsa-1024' is not one of rsa-2048, rsa-3072, rsa-4096, ecdsa-p256" in str(err.value)


def provided_docs(pairs, file="site/certificates.yaml"):
    text = yaml.safe_dump_all([doc for request, material in pairs for doc in pki.documents(request, material)])
    return parse_stream(text, file)


def test_matching_site_certificates_are_reused_verbatim(rsa_site):
    requests, locations = pki.plan(catalog(), provided_docs(rsa_site))
    assert all(r["provided"] for r in requests)
    reused = pki.fulfil_all(requests, locations)
    assert [m["public"] for _, m in reused] == [m["public"] for _, m in rsa_site]
    assert all(m["provided"] for _, m in reused)
    assert pki.certificates_yaml(reused) == ""
    assert pki.certificates_yaml(reused, include_provided=True) == pki.certificates_yaml(rsa_site)


def test_drifted_site_certificate_is_an_error_naming_the_field(rsa_site):
    changed = catalog().pop()
    changed.raw["data"]["certificate_authorities"]["kubernetes"]["certificates"][0]["hosts"].append("10.0.0.9")
    with pytest.raises(PromenadeError) as err:
        pki.fulfil_all(*pki.plan([changed], provided_docs(rsa_site)))
    assert str(err.value) == (
        "site/certificates.yaml:115 [deckhand/Certificate/v1 apiserver]: Certificate 'apiserver' provided by "
        "the site does not match its PKICatalog entry (cluster-certificates "
        ".data.certificate_authorities.kubernetes.certificates[0]): hosts: the site's certificate lacks "
        "['10.0.0.9']. To renew it, delete the deckhand/Certificate/v1 and deckhand/CertificateKey/v1 documents "
        "named 'apiserver' from the site and run `doit certs`: Promenade then issues a new one into "
        "certificates.yaml")


def test_site_certificate_checks_issuer_key_and_expiry(rsa_site):
    (_, ca_mat), (api_req, api_mat) = rsa_site[:2]
    other_ca = pki.fulfil({"kind": "ca", "name": "other", "algorithm": "ecdsa-p256", "days": 1}, {})
    request = dict(api_req, provided={"public": api_mat["public"], "private": rsa_site[2][1]["private"]})
    assert pki.differences(request, other_ca["public"]) == [
        "key: the private key does not belong to the certificate",
        "issuer: not issued by the current CA 'kubernetes'"]
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=400)
    request["provided"]["private"] = api_mat["private"]
    assert pki.differences(request, ca_mat["public"], now=later)[0].startswith("expiry: expired on ")


def test_half_pairs_are_rejected(rsa_site):
    docs = [d for d in provided_docs(rsa_site) if d.schema != pki.CERT_KEY_SCHEMA or d.name != "admin"]
    with pytest.raises(PromenadeError) as err:
        pki.plan(catalog(), docs)
    assert str(err.value).endswith(
        "[deckhand/Certificate/v1 admin]: incomplete pair for 'admin': the site provides "
        "deckhand/Certificate/v1 but not deckhand/CertificateKey/v1; provide both documents or neither "
        "(then Promenade generates them)")


def test_certificates_yaml_groups_by_schema_with_deckhand_metadata(rsa_site):
    text = pki.certificates_yaml(rsa_site)
    docs = list(yaml.safe_load_all(text))
    assert [(d["schema"].split("/")[1], d["metadata"]["name"]) for d in docs] == [
        ("CertificateAuthority", "kubernetes"), ("CertificateAuthorityKey", "kubernetes"),
        ("Certificate", "apiserver"), ("Certificate", "admin"),
        ("CertificateKey", "apiserver"), ("CertificateKey", "admin"),
        ("PublicKey", "service-account"), ("PrivateKey", "service-account")]
    assert docs[0]["metadata"] == {"schema": "metadata/Document/v1", "name": "kubernetes",
                                   "layeringDefinition": {"abstract": False, "layer": "site"},
                                   "storagePolicy": "cleartext"}
    assert "data: |\n  -----BEGIN CERTIFICATE-----\n" in text


def test_expiry_rows_and_table(rsa_site):
    request, material = rsa_site[1]
    now = datetime.datetime.now(datetime.timezone.utc)
    assert pki.expiry_row(request, material, 120, now)["status"] == "ok"
    soon = pki.expiry_row(request, material, 120, now + datetime.timedelta(days=300))
    assert (soon["status"], soon["days_left"], soon["issuer"]) == ("warning", 64, "CN=kubernetes,O=Kubernetes")
    assert pki.expiry_row(request, material, 120, now + datetime.timedelta(days=366))["status"] == "expired"
    table = pki.format_table([soon]).splitlines()
    assert table[0].split() == ["NAME", "KIND", "ISSUER", "NOT", "AFTER", "DAYS", "LEFT", "STATUS", "SOURCE"]
    assert table[1].split()[0:2] == ["apiserver", "cert"]


def test_options_set_in_one_catalog_apply_to_every_catalog():
    addition = parse_stream(
        "schema: promenade/PKICatalog/v1\nmetadata: {name: addition}\ndata:\n  certificate_authorities:\n"
        "    kubernetes:\n      certificates: [{document_name: kubelet-n9, common_name: 'system:node:n9'}]\n"
        "    extra: {}\n", "site/addition.yaml")
    requests, _ = pki.plan(addition + catalog("key_algorithm: ecdsa-p256\n  validity: {leaf_days: 7}"))
    assert {(r["name"], r["algorithm"], r.get("days")) for r in requests} == {
        ("kubernetes", "ecdsa-p256", 3650), ("kubelet-n9", "ecdsa-p256", 7), ("extra", "ecdsa-p256", 3650),
        ("apiserver", "ecdsa-p256", 7), ("admin", "ecdsa-p256", 7), ("service-account", "ecdsa-p256", None)}


def test_key_pool_makes_rsa_keys_ahead_in_worker_processes():
    pool = pki.KeyPool({f"cert:c{i}": "rsa-2048" for i in range(4)} | {"ca:e": "ecdsa-p256"})
    keys = [pool.take(f"cert:c{i}") for i in range(4)]
    assert all(key.key_size == 2048 for key in keys)
    assert len({key.public_key().public_numbers().n for key in keys}) == 4
    assert pool.take("cert:c0") is None and pool.take("ca:e") is None  # taken once; ECDSA made inline
    request = {"kind": "ca", "name": "pooled", "algorithm": "rsa-2048", "days": 30}
    material = pki.fulfil(request, {}, None, pki.KeyPool({f"k{i}": "rsa-2048" for i in range(4)}).take("k1"))
    assert pki.differences({**request, "provided": material}) == []
    assert pki.KeyPool({"few": "rsa-2048"}).take("few") is None  # too few to be worth the workers
