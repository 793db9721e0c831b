"""The rendered-document store rewrites only the files whose document changed."""

import datetime
import hashlib
import json
import os

from promenade import store
from promenade.documents import parse_stream

SITE = """schema: promenade/KubernetesNode/v1
metadata: {name: n1, schema: metadata/Document/v1}
data: {hostname: n1, ip: 192.168.77.11}
---
schema: promenade/KubernetesNode/v1
metadata: {name: n2, schema: metadata/Document/v1}
data: {hostname: n2, ip: 192.168.77.12}
---
schema: deckhand/Certificate/v1
metadata: {name: c, schema: metadata/Document/v1}
data: |
  -----BEGIN CERTIFICATE-----
  AAAA
  -----END CERTIFICATE-----
"""


def snapshot(directory):
    out = {}
    for root, _dirs, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            out[os.path.relpath(path, directory)] = (os.stat(path).st_mtime_ns, open(path, "rb").read())
    return out


NODE = "promenade/KubernetesNode/v1"
CERT = "deckhand/Certificate/v1"


def digests(target):
    return {(entry["schema"], entry["name"]): entry["sha256"] for entry in store.read_index(target)}


def test_only_what_changed_is_rewritten(tmp_path):
    target = str(tmp_path / "store")
    docs = parse_stream(SITE, "site.yaml")
    stored = store.write_store(target, docs)
    assert [d.to_dict() for d in stored] == [d.to_dict() for d in store.load_documents(target)]
    assert [(d.file, d.line) for d in stored] == [("site.yaml", 1), ("site.yaml", 5), ("site.yaml", 9)]
    before, old = snapshot(target), digests(target)
    docs[1].raw["data"]["ip"] = "192.168.77.99"
    store.write_store(target, docs)
    new = digests(target)
    assert [key for key in new if new[key] != old[key]] == [(NODE, "n2")]
    after = snapshot(target)
    differing = sorted(k for k in after if after[k] != before[k])
    assert differing == ["documents.jsonl", "index.json", "schemas/promenade_KubernetesNode_v1.sha256"]
    line = after["documents.jsonl"][1].decode().splitlines()[1]
    assert new[(NODE, "n2")] == hashlib.sha256(line.encode()).hexdigest()
    store.write_store(target, docs)
    assert snapshot(target) == after


def test_round_trip_keeps_provenance_and_content(tmp_path):
    target = str(tmp_path / "store")
    store.write_store(target, parse_stream(SITE, "site.yaml"))
    cert = store.load_document(target, CERT, "c")
    assert cert.data.startswith("-----BEGIN CERTIFICATE-----\n")
    assert (cert.file, cert.line) == ("site.yaml", 9)
    lines = (tmp_path / "store" / "documents.jsonl").read_text().splitlines()
    assert json.loads(lines[2])["document"]["data"] == cert.data
    for name in ("documents.jsonl", "index.json"):
        assert oct(os.stat(tmp_path / "store" / name).st_mode & 0o777) == "0o600"
    assert [d.name for d in store.load_documents(target, [NODE])] == ["n1", "n2"]


def test_documents_and_schemas_that_left_are_removed(tmp_path):
    target = str(tmp_path / "store")
    legacy = tmp_path / "store" / "docs" / "deckhand_CertificateKey_v1"  # an earlier version's layout
    legacy.mkdir(parents=True)
    (legacy / "kubelet-n1.yaml").write_text("data: key\n")
    docs = parse_stream(SITE, "site.yaml")
    store.write_store(target, docs)
    assert not (tmp_path / "store" / "docs").exists()
    assert os.path.exists(store.schema_stamp(target, CERT))
    store.write_store(target, docs[:1])
    assert not os.path.exists(store.schema_stamp(target, CERT))
    assert [e["name"] for e in store.read_index(target)] == ["n1"]
    assert [d.name for d in store.load_documents(target)] == ["n1"]


def test_documents_json_cannot_hold_are_stored_as_yaml(tmp_path):
    """Timestamps and non-string keys survive the store exactly; everything else is JSON."""
    target = str(tmp_path / "store")
    docs = parse_stream(SITE + """---
schema: armada/Chart/v1
metadata: {name: odd, schema: metadata/Document/v1}
data: {released: 2024-05-01, ports: {80: http, 443: https}}
""", "site.yaml")
    store.write_store(target, docs)
    odd = store.load_document(target, "armada/Chart/v1", "odd")
    assert odd.data == {"released": datetime.date(2024, 5, 1), "ports": {80: "http", 443: "https"}}
    records = [json.loads(line) for line in (tmp_path / "store" / "documents.jsonl").read_text().splitlines()]
    assert "yaml" in records[3] and all("document" in record for record in records[:3])
