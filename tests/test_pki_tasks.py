"""`doit certs`, `certs_check` and `certs_renew` driven through doit on copies of real sites."""

import datetime
import json
import os
import pathlib
import re
import shutil

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from doitrun import ROOT, doit, executed

EXAMPLES = "/work/shared/examples/promenade"
CATALOG = os.path.join("site", "pki-catalog.yaml")
NEW_NODE = """\
        - document_name: kubelet-n9
          common_name: system:node:n9
          hosts: [n9, 192.168.77.19]
          groups: [system:nodes]
"""


@pytest.fixture
def site(tmp_path):
    """The embedded site with ECDSA keys (fast to generate)."""
    target = tmp_path / "site"
    shutil.copytree(os.path.join(ROOT, "site"), target)
    edit(target / CATALOG, "\ndata:\n", "\ndata:\n  key_algorithm: ecdsa-p256\n")
    return target


def edit(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def documents(path):
    """certificates.yaml split into its documents: {(schema, name): exact text}."""
    chunks = re.split(r"^---\n", path.read_text(), flags=re.M)[1:]
    return {(d["schema"], d["metadata"]["name"]): chunk for chunk in chunks for d in [yaml.safe_load(chunk)]}


def changed(before, after):
    return sorted(f"{schema.split('/')[1]}/{name}" for (schema, name) in set(before) | set(after)
                  if before.get((schema, name)) != after.get((schema, name)))


def certs_tasks(proc):
    return [name for name in executed(proc) if name.startswith("certs")]


def verify_chains(path, catalog_path):
    """Every certificate verifies against the CA the catalog names; keys match."""
    docs = {(d["schema"].split("/")[1], d["metadata"]["name"]): d["data"]
            for d in yaml.safe_load_all(path.read_text())}
    catalogs = [d["data"] for d in yaml.safe_load_all(catalog_path.read_text())
                if d and d["schema"] == "promenade/PKICatalog/v1"]
    count = 0
    for catalog in catalogs:
        for ca_name, ca in catalog["certificate_authorities"].items():
            ca_cert = x509.load_pem_x509_certificate(docs["CertificateAuthority", ca_name].encode())
            for entry in ca.get("certificates", []):
                cert = x509.load_pem_x509_certificate(docs["Certificate", entry["document_name"]].encode())
                key = serialization.load_pem_private_key(
                    docs["CertificateKey", entry["document_name"]].encode(), password=None)
                cert.verify_directly_issued_by(ca_cert)
                assert cert.public_key().public_numbers() == key.public_key().public_numbers()
                count += 1
    return count


def test_certs_are_incremental_per_certificate(site, tmp_path):
    out = tmp_path / "build"
    first = doit("certs", site=site, out=out)
    assert {"certs:ca-kubernetes", "certs:cert-kubelet-n1", "certs:keypair-service-account",
            "certs:assemble"} <= set(certs_tasks(first))
    certificates = out / "certificates.yaml"
    assert os.stat(certificates).st_mode & 0o777 == 0o600
    assert verify_chains(certificates, site / CATALOG) == 21
    assert certs_tasks(doit("certs", site=site, out=out)) == []

    before = documents(certificates)
    edit(site / CATALOG, "    kubernetes-etcd:\n", NEW_NODE + "    kubernetes-etcd:\n")
    assert certs_tasks(doit("certs", site=site, out=out)) == [
        "certs_requests", "certs:cert-kubelet-n9", "certs:assemble"]
    after = documents(certificates)
    assert changed(before, after) == ["Certificate/kubelet-n9", "CertificateKey/kubelet-n9"]

    edit(site / CATALOG, "hosts: [n2, 192.168.77.12]", "hosts: [n2, 192.168.77.12, n2.example]")
    assert certs_tasks(doit("certs", site=site, out=out)) == [
        "certs_requests", "certs:cert-kubelet-n2", "certs:assemble"]
    final = documents(certificates)
    assert changed(after, final) == ["Certificate/kubelet-n2", "CertificateKey/kubelet-n2"]
    cert = x509.load_pem_x509_certificate(yaml.safe_load(final["deckhand/Certificate/v1", "kubelet-n2"])["data"]
                                          .encode())
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == ["n2", "n2.example"]
    assert verify_chains(certificates, site / CATALOG) == 22
    assert certs_tasks(doit("certs", site=site, out=out)) == []


def test_lost_doit_state_keeps_every_key(site, tmp_path):
    """Deleting doit's state re-runs every task, but material made for the same requests is kept."""
    out = tmp_path / "build"
    doit("certs", site=site, out=out)
    before = (out / "certificates.yaml").read_bytes()
    (out / ".doit.db").unlink()
    assert "certs:cert-kubelet-n1" in certs_tasks(doit("certs", site=site, out=out))
    assert (out / "certificates.yaml").read_bytes() == before


def test_build_issues_a_new_catalog_entry_before_rendering(site, tmp_path):
    """``doit build`` checks the certificate tasks only when the PKI inputs changed, and then first."""
    out = tmp_path / "build"
    doit("build", site=site, out=out)
    assert executed(doit("build", site=site, out=out)) == []
    edit(site / CATALOG, "    kubernetes-etcd:\n", NEW_NODE + "    kubernetes-etcd:\n")
    ran = executed(doit("build", site=site, out=out))
    assert ran[:5] == ["render", "certs_requests", "certs:cert-kubelet-n9", "certs:assemble", "render_final"]
    assert ("deckhand/Certificate/v1", "kubelet-n9") in documents(out / "certificates.yaml")
    assert executed(doit("build", site=site, out=out)) == []


def test_renewing_a_ca_reissues_its_certificates_only(site, tmp_path):
    out = tmp_path / "build"
    doit("certs", site=site, out=out)
    before = documents(out / "certificates.yaml")
    proc = doit("certs_renew", "name=kubernetes-etcd-peer,admin", site=site, out=out)
    assert sorted(certs_tasks(proc)) == sorted([
        "certs:ca-kubernetes-etcd-peer", "certs:cert-kubernetes-etcd-genesis-peer",
        "certs:cert-kubernetes-etcd-n1-peer", "certs:cert-kubernetes-etcd-n2-peer",
        "certs:cert-kubernetes-etcd-n3-peer", "certs:cert-admin", "certs:assemble"])
    assert changed(before, documents(out / "certificates.yaml")) == sorted(
        [f"Certificate/{n}" for n in ("admin", "kubernetes-etcd-genesis-peer", "kubernetes-etcd-n1-peer",
                                       "kubernetes-etcd-n2-peer", "kubernetes-etcd-n3-peer")]
        + [f"CertificateKey/{n}" for n in ("admin", "kubernetes-etcd-genesis-peer", "kubernetes-etcd-n1-peer",
                                          "kubernetes-etcd-n2-peer", "kubernetes-etcd-n3-peer")]
        + ["CertificateAuthority/kubernetes-etcd-peer", "CertificateAuthorityKey/kubernetes-etcd-peer"])
    verify_chains(out / "certificates.yaml", site / CATALOG)
    assert certs_tasks(doit("certs", site=site, out=out)) == []

    renewed = certs_tasks(doit("certs_renew", "name=all", site=site, out=out))
    assert len(renewed) == 22 and "certs:cert-kubelet-n1" in renewed and renewed[-1] == "certs:assemble"
    assert not [name for name in renewed if name.startswith(("certs:ca-", "certs:keypair-"))]

    proc = doit("certs_renew", "name=nope", site=site, out=out, check=False)
    assert proc.returncode != 0 and "no CA, certificate or key pair named nope" in proc.stderr


def test_site_certificates_are_reused_and_drift_stops_the_build(site, tmp_path):
    out = tmp_path / "build"
    doit("certs", site=site, out=out)
    provided = site / "site" / "certificates.yaml"
    shutil.copy(out / "certificates.yaml", provided)
    assert certs_tasks(doit("certs", site=site, out=tmp_path / "again")) != []
    assert (tmp_path / "again" / "certificates.yaml").read_text() == ""

    edit(site / CATALOG, "hosts: [n2, 192.168.77.12]", "hosts: [n2, 192.168.77.12, 10.0.0.2]")
    proc = doit("certs", site=site, out=out, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stdout + proc.stderr
    lines = provided.read_text().splitlines()
    name_at = next(i for i, text in enumerate(lines)
                   if text == "  name: kubelet-n2" and "schema: deckhand/Certificate/v1" in lines[i:i + 4])
    line = max(i for i in range(name_at) if lines[i] == "---") + 2  # the document's first line, 1-based
    assert (f"{provided}:{line} [deckhand/Certificate/v1 kubelet-n2]: Certificate 'kubelet-n2' provided by the "
            "site does not match its PKICatalog entry (cluster-certificates "
            ".data.certificate_authorities.kubernetes.certificates[9]): hosts: the site's certificate lacks "
            "['10.0.0.2']. To renew it, delete the deckhand/Certificate/v1 and deckhand/CertificateKey/v1 "
            "documents named 'kubelet-n2' from the site and run `doit certs`: Promenade then issues a new one "
            "into certificates.yaml") in proc.stderr


def test_half_pairs_in_the_site_are_rejected(site, tmp_path):
    out = tmp_path / "build"
    doit("certs", site=site, out=out)
    docs = [d for d in yaml.safe_load_all((out / "certificates.yaml").read_text())
            if (d["schema"], d["metadata"]["name"]) != ("deckhand/CertificateKey/v1", "admin")]
    (site / "site" / "certificates.yaml").write_text(yaml.safe_dump_all(docs))
    proc = doit("certs", site=site, out=out, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert ("[deckhand/Certificate/v1 admin]: incomplete pair for 'admin': the site provides "
            "deckhand/Certificate/v1 but not deckhand/CertificateKey/v1") in proc.stderr


def expired_ca(name):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)])
    start = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(1).not_valid_before(start).not_valid_after(start + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    meta = {"schema": "metadata/Document/v1", "name": name,
            "layeringDefinition": {"abstract": False, "layer": "site"}, "storagePolicy": "cleartext"}
    return yaml.safe_dump_all([
        {"schema": "deckhand/CertificateAuthority/v1", "metadata": meta,
         "data": cert.public_bytes(serialization.Encoding.PEM).decode()},
        {"schema": "deckhand/CertificateAuthorityKey/v1", "metadata": meta,
         "data": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                   serialization.NoEncryption()).decode()}], explicit_start=True)


def test_check_reports_every_ca_and_certificate_and_fails_on_expiry(site, tmp_path):
    out = tmp_path / "build"
    doit("certs", site=site, out=out)
    proc = doit("--reporter", "zero", "certs_check", "format=json", "warn=400", site=site, out=out)
    rows = json.loads(proc.stdout)
    assert len(rows) == 24 and {r["kind"] for r in rows} == {"ca", "cert"}
    assert {r["status"] for r in rows if r["kind"] == "cert"} == {"warning"}
    assert {(r["status"], r["source"]) for r in rows if r["kind"] == "ca"} == {("ok", "generated")}
    assert "warning: apiserver, " in proc.stderr and "expire within 400 days" in proc.stderr
    table = doit("certs_check", site=site, out=out).stdout
    assert "kubelet-n1" in table and "NOT AFTER" in table

    (site / "site" / "old-ca.yaml").write_text(expired_ca("kubernetes-etcd-peer"))
    proc = doit("certs_check", site=site, out=out, check=False)
    assert proc.returncode != 0
    assert "expired: kubernetes-etcd-peer" in proc.stderr
    failed = doit("certs", site=site, out=out, check=False)
    assert failed.returncode != 0 and "expiry: expired on 2020-01-31" in failed.stderr


@pytest.mark.parametrize("site_dir", [os.path.join(ROOT, "site")] + [
    os.path.join(EXAMPLES, name) for name in ("basic", "complete", "containerd", "gate", "simple")])
def test_certs_build_the_embedded_and_every_example_site(site_dir, tmp_path):
    out = tmp_path / "build"
    doit("certs", site=site_dir, out=out)
    catalogs = pathlib.Path(site_dir).glob("**/*.yaml")
    assert sum(verify_chains(out / "certificates.yaml", catalog) for catalog in catalogs) > 10
