"""``doit build`` on the original's example sites, their downloads served from loopback."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import tarfile

import pytest

from doitrun import ROOT, doit
from test_build import SHELLCHECK, members, payloads
from test_downloads import KUBELET, server  # noqa: F401 (fixture)

EXAMPLES = os.path.join(os.path.dirname(ROOT), "shared", "examples", "promenade")
UPSTREAM = "https://dl.k8s.io/v1.33.5/kubernetes-node-linux-amd64.tar.gz"


@pytest.mark.parametrize("example", ["simple", "basic", "gate"])
def test_example_site_builds(example, server, tmp_path):  # noqa: F811 (fixture)
    base, hits = server
    site = tmp_path / "site"
    shutil.copytree(os.path.join(EXAMPLES, example), site)
    for path in site.glob("*.yaml"):
        path.write_text(path.read_text().replace(UPSTREAM, f"{base}/node.tar.gz"))
    catalog = site / "PKICatalog.yaml"  # ECDSA keys: much faster to generate than RSA
    catalog.write_text(catalog.read_text().replace("\ndata:\n", "\ndata:\n  key_algorithm: ecdsa-p256\n", 1))
    out = tmp_path / "out"
    env = {"PROMENADE_ENCRYPTION_KEY": "example passphrase"}
    doit("certs", "build", site=site, out=out, env=env)
    scripts = sorted(out.glob("*.sh"))
    assert {p.name for p in scripts} >= {"genesis.sh", "validate-genesis.sh", "validate-cluster.sh"}
    for path in scripts:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        subprocess.run(["bash", "-n", str(path)], check=True)
    subprocess.run([SHELLCHECK, *map(str, scripts)], check=True)

    parts = payloads((out / "genesis.sh").read_bytes())
    if b"gpg --batch" in (out / "genesis.sh").read_bytes():  # basic encrypts genesis
        home = tmp_path / "gnupg"
        home.mkdir(mode=0o700)
        parts = {label: subprocess.run(
            ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback", "--passphrase",
             env["PROMENADE_ENCRYPTION_KEY"], "--decrypt"], input=blob, capture_output=True, check=True).stdout
            for label, blob in parts.items()}
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)
    node, shared = members(parts["node"]), members(parts["shared"])
    assert node["etc/kubernetes/manifests/kubernetes-apiserver.yaml"].isfile()
    keys = [m for name, m in node.items() if name.endswith(("-key.pem", ".key"))]
    assert keys and all(stat.S_IMODE(m.mode) & 0o077 == 0 for m in keys)
    if example != "simple":  # simple has no kubelet download and no Genesis files
        assert "etc/genesis/apiserver/acconfig.yaml" in members(parts["genesis"])  # Genesis files, last
        assert hits == ["/node.tar.gz"]  # both tar_url entries share one fetch
        kubelet = shared["usr/local/bin/kubelet"]
        assert stat.S_IMODE(kubelet.mode) == 0o555
        with tarfile.open(fileobj=io.BytesIO(parts["shared"]), mode="r:gz") as tar:
            assert tar.extractfile(kubelet).read() == KUBELET
