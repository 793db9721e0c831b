"""`promenade generate-certs -o DIR FILES...`, as the original command line."""

import os
import shutil

import pytest
import yaml
from cryptography import x509

from promenade import cli
from promenade.documents import site_files

from doitrun import ROOT


@pytest.fixture
def site_files_ecdsa(tmp_path):
    site = tmp_path / "site"
    shutil.copytree(os.path.join(ROOT, "site"), site)
    catalog = site / "site" / "pki-catalog.yaml"
    catalog.write_text(catalog.read_text().replace("\ndata:\n", "\ndata:\n  key_algorithm: ecdsa-p256\n", 1))
    return site_files(str(site))


def test_generate_certs_writes_and_reuses_certificates(site_files_ecdsa, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    assert cli.main(["generate-certs", "-o", str(out), *site_files_ecdsa]) == 0
    written = out / "certificates.yaml"
    assert os.stat(written).st_mode & 0o777 == 0o600
    docs = {(d["schema"].split("/")[1], d["metadata"]["name"]): d["data"]
            for d in yaml.safe_load_all(written.read_text())}
    assert len(docs) == 50
    ca = x509.load_pem_x509_certificate(docs["CertificateAuthority", "kubernetes-etcd-peer"].encode())
    x509.load_pem_x509_certificate(docs["Certificate", "kubernetes-etcd-n1-peer"].encode()).verify_directly_issued_by(ca)

    again = tmp_path / "again"
    again.mkdir()
    assert cli.main(["-v", "generate-certs", "-o", str(again), *site_files_ecdsa, str(written)]) == 0
    assert (again / "certificates.yaml").read_text() == written.read_text()
    assert "cert kubelet-n1: reused from the site" in capsys.readouterr().err


def test_generate_certs_reports_user_errors_without_traceback(site_files_ecdsa, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["generate-certs", "-o", str(tmp_path / "missing"), *site_files_ecdsa])
    assert exit_info.value.code == 2
    assert "directory" in capsys.readouterr().err

    half = tmp_path / "half.yaml"
    half.write_text("schema: deckhand/CertificateKey/v1\nmetadata: {schema: metadata/Document/v1, name: admin, "
                    "layeringDefinition: {abstract: false, layer: site}}\ndata: not-a-key\n")
    assert cli.main(["generate-certs", "-o", str(tmp_path), *site_files_ecdsa, str(half)]) == 1
    err = capsys.readouterr().err
    assert "incomplete pair for 'admin'" in err and "Traceback" not in err
    assert not (tmp_path / "certificates.yaml").exists()
