"""``doit build``: scripts, permissions, the incremental rules and byte-identical rebuilds."""

from __future__ import annotations

import base64
import functools
import hashlib
import http.server
import io
import os
import shutil
import stat
import subprocess
import tarfile
import threading

import pytest

from doitrun import ROOT, doit, executed

SHELLCHECK = os.path.join(ROOT, ".venv", "bin", "shellcheck")
MARKER = b"#@promenade-payload "


def payloads(script: bytes) -> dict[str, bytes]:
    """Decode the embedded payload sections of a script, by label."""
    found, label, lines = {}, None, []
    for line in script[script.index(b"\n" + MARKER) + 1:].splitlines():
        if line.startswith(MARKER):
            if label:
                found[label] = base64.b64decode(b"".join(lines))
            label, lines = line[len(MARKER):].decode(), []
        else:
            lines.append(line[1:])
    found[label] = base64.b64decode(b"".join(lines))
    return found


def members(blob: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        return {member.name: member for member in tar.getmembers()}


def outputs(out) -> dict[str, tuple[int, bytes]]:
    """Every script in ``out``: name -> (mtime_ns, bytes)."""
    return {path.name: (path.stat().st_mtime_ns, path.read_bytes()) for path in sorted(out.glob("*.sh"))}


def build(site, out, env=None, check=True):
    """``doit certs build``: certificates first, then every script."""
    return doit("certs", "build", site=site, out=out, env=env, check=check)


def scripts_built(proc) -> list[str]:
    return [name for name in executed(proc) if name.startswith(("build_node", "build_genesis", "build_cluster"))]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The embedded site copied to a temporary directory and built once."""
    base = tmp_path_factory.mktemp("build")
    site = copy_site(base / "site")
    out = base / "out"
    build(site, out)
    return site, out


def test_build_writes_every_script_private_and_clean(built):
    site, out = built
    names = {path.name for path in out.glob("*.sh")}
    assert names == {"genesis.sh", "validate-genesis.sh", "validate-cluster.sh"} | {
        f"{kind}-{node}.sh" for node in ("n1", "n2", "n3") for kind in ("join", "validate")}
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    for path in out.glob("*.sh"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        text = path.read_bytes()
        assert text.startswith(b"#!/usr/bin/env bash\n") and b"\nset -euo pipefail\n" in text
        subprocess.run(["bash", "-n", str(path)], check=True)
    subprocess.run([SHELLCHECK, *map(str, sorted(out.glob("*.sh")))], check=True)


def test_noop_build_executes_nothing(built):
    site, out = built
    proc = doit("build", site=site, out=out)
    assert executed(proc) == []
    assert "0 scripts built, 9 up to date, 0 removed" in proc.stdout


def test_join_payload_holds_node_files_with_modes(built):
    _site, out = built
    parts = payloads((out / "join-n1.sh").read_bytes())
    assert list(parts) == ["node", "shared"]
    node = members(parts["node"])
    key = node["etc/kubernetes/pki/kubelet-key.pem"]
    assert key.isfile() and stat.S_IMODE(key.mode) == 0o600 and key.uid == key.gid == 0
    assert node["etc/kubernetes"].isdir() and node["etc"].isdir()
    assert b"n1" in tarfile.open(fileobj=io.BytesIO(parts["node"])).extractfile("etc/hosts").read()
    assert not any(name.startswith("etc/genesis") for name in node)
    shared = members(parts["shared"])
    assert shared, "HostSystem files are in the shared payload"
    # Every join script embeds the very same shared payload bytes.
    assert payloads((out / "join-n2.sh").read_bytes())["shared"] == parts["shared"]


def test_script_phases_list_and_skip(built):
    _site, out = built
    script = str(out / "join-n1.sh")
    listed = subprocess.run(["bash", script, "--list-phases"], capture_output=True, text=True, check=True)
    phases = listed.stdout.split()
    assert phases[0] == "validate-host" and phases[-1] == "finish" and "label-node" in phases
    bad = subprocess.run(["bash", script, "--skip-phases", "nope"], capture_output=True, text=True)
    assert bad.returncode == 1 and "unknown phase 'nope'" in bad.stderr


def _edit(path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def copy_site(target):
    """The embedded site copied to ``target``, with ECDSA keys (much faster to generate than RSA)."""
    shutil.copytree(os.path.join(ROOT, "site"), target)
    for path in target.rglob("*.yaml"):
        text = path.read_text()
        if "schema: promenade/PKICatalog/v1" in text and "key_algorithm" not in text:
            path.write_text(text.replace("\ndata:\n", "\ndata:\n  key_algorithm: ecdsa-p256\n"))
    return target


def schema_file(site, schema: str, name: str):
    """The site file holding document ``schema`` / ``name``."""
    for path in sorted(site.rglob("*.yaml")):
        text = path.read_text()
        if f"schema: {schema}\n" in text and f"\n  name: {name}\n" in text:
            return path
    raise AssertionError(f"no file defines {schema} {name}")


@pytest.fixture
def fresh(tmp_path):
    site = copy_site(tmp_path / "site")
    out = tmp_path / "out"
    build(site, out)
    return site, out


def test_relabel_rebuilds_only_that_node(fresh):
    site, out = fresh
    state = out / "state" / "build"  # without encryption the roles share one payload file on disk
    assert os.path.samefile(state / "shared-genesis.payload", state / "shared-join.payload")
    before = outputs(out)
    _edit(schema_file(site, "promenade/KubernetesNode/v1", "n1"), "    dynamic:\n",
          "    dynamic:\n      - relabelled=true\n")
    proc = build(site, out)
    assert scripts_built(proc) == ["build_node:n1"]
    after = outputs(out)
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"join-n1.sh"}
    assert b"relabelled=true" in after["join-n1.sh"][1]
    assert executed(build(site, out)) == []


def test_shared_document_change_rebuilds_every_node(fresh):
    site, out = fresh
    before = outputs(out)
    _edit(schema_file(site, "promenade/Kubelet/v1", "kubelet"), "\n  arguments:\n", "\n  arguments:\n    - --v=7\n")
    proc = build(site, out)
    assert set(scripts_built(proc)) == {"build_genesis", "build_node:n1", "build_node:n2", "build_node:n3",
                                        "build_cluster"}
    after = outputs(out)
    for name in ("genesis.sh", "join-n1.sh", "join-n2.sh", "join-n3.sh"):
        assert before[name][1] != after[name][1], name


def test_removing_a_node_removes_its_scripts(fresh):
    site, out = fresh
    path = schema_file(site, "promenade/KubernetesNode/v1", "n3")
    documents = path.read_text().split("\n---\n")
    kept = [doc for doc in documents if not ("promenade/KubernetesNode/v1" in doc and "\n  name: n3\n" in doc)]
    assert len(kept) == len(documents) - 1
    path.write_text("\n---\n".join(kept))
    proc = build(site, out)
    assert "1 removed" in proc.stdout or "2 removed" in proc.stdout
    assert not (out / "join-n3.sh").exists() and not (out / "validate-n3.sh").exists()
    assert (out / "join-n2.sh").exists()


def test_node_that_cannot_be_built_loses_its_old_scripts(fresh):
    site, out = fresh
    _edit(site / "site" / "pki-catalog.yaml",
          "        - document_name: kubelet-n3\n          common_name: system:node:n3\n"
          "          hosts: [n3, 192.168.77.13]\n          groups: [system:nodes]\n", "")
    proc = build(site, out, check=False)
    assert proc.returncode != 0
    assert "kubelet-n3" in proc.stderr and "Traceback" not in proc.stderr
    assert not (out / "join-n3.sh").exists() and not (out / "validate-n3.sh").exists()
    assert (out / "join-n2.sh").exists()


def test_batched_nodes_rebuild_only_the_changed_node(tmp_path):
    """Big sites build nodes in batches (forced here with ``batches=2``): one task per batch, and a
    batch rewrites only its nodes whose inputs changed."""
    site, out = copy_site(tmp_path / "site"), tmp_path / "out"
    batched = functools.partial(doit, "certs", "build", "batches=2", site=site, out=out)
    first = batched()
    tasks = sorted(name for name in executed(first) if name.startswith("build_node"))
    assert tasks and all(name.startswith("build_node:batch-") for name in tasks) and len(tasks) <= 2
    assert {"join-n1.sh", "join-n2.sh", "join-n3.sh"} <= set(outputs(out))
    assert executed(batched()) == []

    before = outputs(out)
    _edit(schema_file(site, "promenade/KubernetesNode/v1", "n1"), "    dynamic:\n",
          "    dynamic:\n      - relabelled=true\n")
    proc = batched()
    assert len([name for name in executed(proc) if name.startswith("build_node")]) == 1
    assert "2 scripts built" in proc.stdout
    after = outputs(out)
    assert {name for name in before if before[name] != after[name]} == {"join-n1.sh"}

    forced = doit("-a", "build", "batches=2", site=site, out=out)  # nothing changed: every node is rebuilt
    assert "9 scripts built" in forced.stdout
    assert {name: data for name, (_mtime, data) in outputs(out).items()} == {
        name: data for name, (_mtime, data) in after.items()}


def test_batch_reports_a_failing_node_and_builds_the_others(tmp_path):
    site, out = copy_site(tmp_path / "site"), tmp_path / "out"
    doit("certs", "build", "batches=1", site=site, out=out)
    _edit(site / "site" / "pki-catalog.yaml",
          "        - document_name: kubelet-n3\n          common_name: system:node:n3\n"
          "          hosts: [n3, 192.168.77.13]\n          groups: [system:nodes]\n", "")
    _edit(schema_file(site, "promenade/KubernetesNode/v1", "n1"), "    dynamic:\n",
          "    dynamic:\n      - relabelled=true\n")
    proc = doit("certs", "build", "batches=1", site=site, out=out, check=False)
    assert proc.returncode != 0 and "kubelet-n3" in proc.stderr and "Traceback" not in proc.stderr
    assert not (out / "join-n3.sh").exists() and not (out / "validate-n3.sh").exists()
    assert b"relabelled=true" in (out / "join-n1.sh").read_bytes()

    bad = doit("build", "batches=x", site=site, out=out, check=False)
    assert bad.returncode != 0 and "batches='x'" in bad.stdout + bad.stderr


def test_rebuild_from_scratch_is_byte_identical(fresh, tmp_path):
    site, out = fresh
    shutil.copy(out / "certificates.yaml", site / "certificates.yaml")  # same PKI for both builds
    first, second = tmp_path / "a", tmp_path / "b"
    build(site, first)
    build(site, second)
    assert outputs(first).keys() == outputs(second).keys()
    for name, (_mtime, data) in outputs(first).items():
        assert (second / name).read_bytes() == data, name


def test_missing_encryption_key_is_a_clear_error(fresh):
    site, out = fresh
    _edit(schema_file(site, "promenade/EncryptionPolicy/v1", "encryption-policy"), "\ndata:\n", "\ndata:\n  scripts:\n    join:\n      gpg: {}\n")
    env = {"PROMENADE_ENCRYPTION_KEY": ""}
    proc = build(site, out, env=env, check=False)
    assert proc.returncode != 0
    assert "PROMENADE_ENCRYPTION_KEY is not set" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_encrypted_join_payload_decrypts_with_gpg(fresh, tmp_path):
    site, out = fresh
    _edit(schema_file(site, "promenade/EncryptionPolicy/v1", "encryption-policy"), "\ndata:\n", "\ndata:\n  scripts:\n    join:\n      gpg: {}\n")
    key = "correct horse battery staple"
    build(site, out, env={"PROMENADE_ENCRYPTION_KEY": key})
    script = (out / "join-n1.sh").read_bytes()
    assert key.encode() not in script and b"gpg --batch" in script
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    for label, blob in payloads(script).items():
        plain = subprocess.run(
            ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback", "--passphrase", key,
             "--decrypt"], input=blob, capture_output=True, check=True).stdout
        assert members(plain), label
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)
    # Unchanged inputs keep the same ciphertext: a rebuild is a no-op and leaves the bytes alone.
    assert executed(build(site, out, env={"PROMENADE_ENCRYPTION_KEY": key})) == []
    state = out / "state" / "build"  # only join is encrypted: the roles' shared payloads differ
    assert not os.path.samefile(state / "shared-genesis.payload", state / "shared-join.payload")
    # A new key re-encrypts every payload.
    proc = build(site, out, env={"PROMENADE_ENCRYPTION_KEY": "another key"})
    assert {"build_node:n1", "build_node:n2", "build_node:n3"} <= set(executed(proc))
    blob = payloads((out / "join-n1.sh").read_bytes())["node"]
    try:
        subprocess.run(["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback", "--passphrase",
                        "another key", "--decrypt"], input=blob, capture_output=True, check=True)
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)


def test_build_all_cli_matches_doit_build(built, tmp_path):
    site, out = built
    files = sorted(str(p) for p in site.rglob("*.yaml")) + [str(out / "certificates.yaml")]
    cli = os.path.join(ROOT, ".venv", "bin", "promenade")
    subprocess.run([cli, "build-all", "-o", str(tmp_path), "--validators", *files], check=True, capture_output=True)
    for name in ("genesis.sh", "join-n1.sh", "validate-n1.sh", "validate-cluster.sh"):
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name
    assert b"remove_admin_access" in (tmp_path / "join-n1.sh").read_bytes()
    kept = tmp_path / "kept"
    kept.mkdir()
    subprocess.run([cli, "build-all", "-o", str(kept), "--leave-kubectl", *files], check=True, capture_output=True)
    assert sorted(p.name for p in kept.iterdir()) == ["genesis.sh", "join-n1.sh", "join-n2.sh", "join-n3.sh"]
    assert b"remove_admin_access" not in (kept / "join-n1.sh").read_bytes()


def run_fetch_payload(script, label: str, digest: str, source: str, target, env=None):
    """Run the script's own ``fetch_payload`` shell function (nothing else of the script)."""
    text = script.read_text(errors="replace")
    function = text[text.index("\nfetch_payload() {") + 1:]
    function = function[:function.index("\n}\n") + 3]
    settings = "".join(line + "\n" for line in text.splitlines() if line.startswith("BLOB_URL="))
    shell = (f"set -euo pipefail\nlog() {{ :; }}\ndie() {{ echo \"$*\" >&2; exit 1; }}\n"
             f"SCRIPT_PATH={script}\n{settings}{function}\nfetch_payload {label} {digest} {source} {target}\n")
    return subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, **(env or {})))


def test_embedded_payload_is_decoded_and_checked_by_the_script(built, tmp_path):
    _site, out = built
    script = out / "join-n2.sh"
    node = payloads(script.read_bytes())["node"]
    digest = hashlib.sha256(node).hexdigest()
    proc = run_fetch_payload(script, "node", digest, "embedded", tmp_path / "node")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "node").read_bytes() == node
    bad = run_fetch_payload(script, "node", "0" * 64, "embedded", tmp_path / "bad")
    assert bad.returncode == 1 and "does not match its sha256" in bad.stderr


def test_by_reference_join_scripts_fetch_the_shared_blob(fresh, tmp_path):
    site, out = fresh
    embedded = (out / "join-n1.sh").read_bytes()
    proc = doit("build", "blob_url=http://127.0.0.1:9000/blobs", site=site, out=out)
    assert {"build_node:n1", "build_node:n2", "build_node:n3"} <= set(executed(proc))
    script = (out / "join-n1.sh").read_bytes()
    assert list(payloads(script)) == ["node"] and len(script) < len(embedded)
    shared = payloads(embedded)["shared"]
    digest = hashlib.sha256(shared).hexdigest()
    assert f"shared {digest} blob".encode() in script
    assert b'BLOB_URL="${PROMENADE_BLOB_URL:-http://127.0.0.1:9000/blobs}"' in script
    assert (out / "blobs" / digest).read_bytes() == shared
    # The script downloads the blob (here from a loopback server over build/) and checks its digest.
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(out))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        env = {"PROMENADE_BLOB_URL": f"http://127.0.0.1:{httpd.server_address[1]}/blobs"}
        fetched = run_fetch_payload(out / "join-n1.sh", "shared", digest, "blob", tmp_path / "shared", env)
        assert fetched.returncode == 0, fetched.stderr
        assert (tmp_path / "shared").read_bytes() == shared
        (out / "blobs" / digest).write_bytes(b"tampered")
        tampered = run_fetch_payload(out / "join-n1.sh", "shared", digest, "blob", tmp_path / "t", env)
        assert tampered.returncode == 1 and "does not match its sha256" in tampered.stderr
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_finished_run_is_recorded_and_not_redone(built):
    """A finished run writes the marker, removes kubectl, and later runs stop at once.

    Runs in private mount and UTS namespaces (hostname n1) with tmpfs on /var/lib, /usr/local/bin
    and /etc/kubernetes, so the host is not touched.
    """
    _site, out = built
    script = str(out / "join-n1.sh")
    phases = subprocess.run(["bash", script, "--list-phases"], capture_output=True, text=True,
                            check=True).stdout.split()
    skip = ",".join(phase for phase in phases if phase != "finish")
    shell = ("set -e; hostname n1; for d in /var/lib /usr/local/bin /etc/kubernetes; do [ ! -d $d ] || mount -t tmpfs none $d; "
             f"done; touch /usr/local/bin/kubectl; bash {script} --skip-phases {skip}; cat /var/lib/prom.done; "
             f"test ! -e /usr/local/bin/kubectl && echo kubectl-removed; bash {script}; echo rc=$?")
    existed = os.path.exists("/var/lib/prom.done")
    proc = subprocess.run(["unshare", "--mount", "--uts", "--propagation", "private", "sh", "-c", shell],
                          capture_output=True, text=True, timeout=60)
    assert "phase validate-host: skipped" in proc.stderr and "Finished: /var/lib/prom.done written" in proc.stderr
    assert "records a finished run" in proc.stderr and "nothing to do" in proc.stderr
    assert "kubectl-removed" in proc.stdout and proc.stdout.strip().endswith("rc=0")
    assert os.path.exists("/var/lib/prom.done") == existed  # the host itself was not touched


def test_reporter_shows_one_status_line_on_a_terminal():
    from promenade.tasks.build import BuildReporter

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    class Task:
        def __init__(self, name, values=None):
            self.name, self.values, self.actions, self.task_dep = name, values or {}, [object()], []
            node = name.partition(":")[2]
            self.targets = [f"join-{node}.sh", f"validate-{node}.sh"] if node else []
            self.meta = {"scripts": len(self.targets)} if node else None  # as build.node_tasks() sets it

        def title(self):
            return self.name

    stream = Terminal()
    reporter = BuildReporter(stream, {"failure_verbosity": 0})
    tasks = {name: Task(name, {"scripts": 2}) for name in ("build_node:a", "build_node:b")}
    tasks["build_prune"] = Task("build_prune", {"removed": 1})
    reporter.initialize(tasks, list(tasks))
    reporter.execute_task(tasks["build_node:a"])
    reporter.add_success(tasks["build_node:a"])
    reporter.skip_uptodate(tasks["build_node:b"])
    reporter.execute_task(tasks["build_prune"])
    reporter.add_success(tasks["build_prune"])
    reporter.complete_run()
    text = stream.getvalue()
    assert "\n.  " not in text and "[3/3] build_prune" in text and text.count("\n") == 2
    assert "promenade: 2 scripts built, 2 up to date, 1 removed" in text


def test_reporter_summarises_long_runs_in_logs():
    from promenade.tasks.build import BuildReporter

    class Task:
        def __init__(self, name):
            self.name, self.values, self.actions, self.task_dep = name, {"scripts": 2}, [object()], []

        def title(self):
            return self.name

    stream = io.StringIO()
    reporter = BuildReporter(stream, {"failure_verbosity": 0})
    tasks = {f"build_node:w{i}": Task(f"build_node:w{i}") for i in range(1000)}
    reporter.initialize(tasks, list(tasks))
    for task in tasks.values():
        reporter.execute_task(task)
        reporter.add_success(task)
    reporter.complete_run()
    lines = stream.getvalue().splitlines()
    assert len(lines) < 120
    assert lines[0] == ".  build_node:w0" and lines[-2].startswith("[1000/1000] build_node:w999")
    assert lines[-1].startswith("promenade: 2000 scripts built, 0 up to date, 0 removed")
