"""The render / validate tasks driven through doit, on a copy of the embedded site."""

import os
import shutil

import pytest

from doitrun import ROOT, doit, executed

SITE = os.path.join(ROOT, "site")


@pytest.fixture
def site(tmp_path):
    target = tmp_path / "site"
    shutil.copytree(SITE, target)
    return target


def files_under(directory):
    out = {}
    for root, _dirs, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                out[os.path.relpath(path, directory)] = (os.stat(path).st_mtime_ns, handle.read())
    return out


def node_document_file(site_dir, name):
    for root, _dirs, files in os.walk(site_dir):
        for filename in files:
            path = os.path.join(root, filename)
            text = open(path).read()
            if "promenade/KubernetesNode/v1" in text and f"name: {name}\n" in text:
                return path
    raise AssertionError(f"no KubernetesNode {name} in {site_dir}")


def test_render_is_incremental_per_document(site, tmp_path):
    out = tmp_path / "build"
    first = doit("render", site=site, out=out)
    assert executed(first) == ["render"]
    assert oct(os.stat(out).st_mode & 0o777) == "0o700"
    assert executed(doit("render", site=site, out=out)) == []

    before = files_under(out / "state" / "site")
    path = node_document_file(site, "n2")
    text = open(path).read()
    with open(path, "w") as handle:
        handle.write(text.replace("dynamic:\n", "dynamic:\n      - promenade-test=changed\n", 1))
    assert executed(doit("render", site=site, out=out)) == ["render"]
    after = files_under(out / "state" / "site")
    changed = sorted(k for k in after if after[k] != before.get(k))
    # the document line, its sha256 in the index, its schema's digest, what the render found valid
    assert changed == ["documents.jsonl", "index.json", "schemas/promenade_KubernetesNode_v1.sha256", "valid.json"]


def test_bad_site_fails_cleanly_and_leaves_build_untouched(site, tmp_path):
    out = tmp_path / "build"
    doit("render", site=site, out=out)
    before = files_under(out / "state")
    path = node_document_file(site, "n1")
    with open(path, "a") as handle:
        handle.write("---\nschema: promenade/KubernetesNode/v1\nmetadata: [not, a, mapping\n")
    proc = doit("render", site=site, out=out, check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stdout + proc.stderr
    assert f"{path}:" in proc.stderr and "YAML syntax error" in proc.stderr
    assert files_under(out / "state") == before


def test_validate_prints_one_line_summary(site, tmp_path):
    proc = doit("validate", site=site, out=tmp_path / "build")
    summary = [line for line in proc.stdout.splitlines() if "rendered documents, valid" in line]
    assert len(summary) == 1 and summary[0].startswith(f"{site}: ")


def test_missing_site_directory_is_reported(tmp_path):
    proc = doit("validate", site=tmp_path / "nope", out=tmp_path / "build", check=False)
    assert proc.returncode != 0
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_list_documents_every_task(tmp_path):
    proc = doit("list", out=tmp_path / "build")
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert {"render", "render_final", "validate"} <= {line.split()[0] for line in lines}
    assert all(len(line.split(None, 1)) == 2 for line in lines), lines


def test_a_store_without_its_documents_is_rendered_again(site, tmp_path):
    """A missing documents.jsonl (deleted, or a build directory from an older layout) is a missing
    target: the render runs again instead of a later task failing to read it."""
    out = tmp_path / "build"
    doit("render", site=site, out=out)
    (out / "state" / "site" / "documents.jsonl").unlink()
    assert executed(doit("render", site=site, out=out)) == ["render"]
    assert (out / "state" / "site" / "documents.jsonl").exists()
