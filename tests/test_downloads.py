"""Build-time downloads against a loopback HTTP server."""

from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading

import pytest

from promenade import downloads
from promenade.errors import Problem, PromenadeError

KUBELET = b"\x7fELF fake kubelet" * 100
KUBECTL = b"\x7fELF fake kubectl" * 100


def _tarball() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in (("kubelet", KUBELET), ("kubectl", KUBECTL)):
            info = tarfile.TarInfo(f"kubernetes/node/bin/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def server():
    """Serves /node.tar.gz and /file; /broken always answers 500. Records every request path."""
    routes = {"/node.tar.gz": _tarball(), "/file": b"plain content\n"}
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server API)
            hits.append(self.path)
            body = routes.get(self.path)
            if body is None:
                self.send_error(500 if self.path == "/broken" else 404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", hits
    httpd.shutdown()
    httpd.server_close()


def _problem(message):
    return Problem(message, file="site/host-system.yaml", line=12, schema="promenade/HostSystem/v1",
                   name="host-system", path=".data.files[0]")


def _cache(tmp_path):
    return downloads.Cache(str(tmp_path / "cache"), timeout=5, retries=2, backoff=0)


def test_url_is_fetched_once_and_cached_by_content(server, tmp_path):
    base, hits = server
    cache = _cache(tmp_path)
    spec = {"path": "/etc/file", "mode": 0o644, "url": f"{base}/file"}
    assert downloads.resolve(cache, spec, _problem) == b"plain content\n"
    assert downloads.resolve(_cache(tmp_path), spec, _problem) == b"plain content\n"
    assert hits == ["/file"]
    digest = hashlib.sha256(b"plain content\n").hexdigest()
    assert (tmp_path / "cache" / "sha256" / digest).read_bytes() == b"plain content\n"


def test_tar_member_is_extracted_and_tarball_fetched_once(server, tmp_path):
    base, hits = server
    cache = _cache(tmp_path)
    for name in ("kubelet", "kubelet-again"):
        spec = {"path": f"/usr/local/bin/{name}", "mode": 0o555, "tar_url": f"{base}/node.tar.gz",
                "tar_path": "kubernetes/node/bin/kubelet"}
        assert downloads.resolve(cache, spec, _problem) == KUBELET
    assert hits == ["/node.tar.gz"]
    missing = {"path": "/x", "mode": 0o555, "tar_url": f"{base}/node.tar.gz", "tar_path": "nope"}
    with pytest.raises(PromenadeError, match="has no regular file 'nope'"):
        downloads.resolve(cache, missing, _problem)


def test_pinned_sha256_is_checked_and_serves_offline(server, tmp_path, monkeypatch):
    base, hits = server
    good = hashlib.sha256(b"plain content\n").hexdigest()
    spec = {"path": "/etc/file", "mode": 0o644, "url": f"{base}/file", "sha256": "0" * 64}
    with pytest.raises(PromenadeError) as error:
        downloads.resolve(_cache(tmp_path), spec, _problem)
    assert f"has sha256 {good}, but the entry pins {'0' * 64}" in str(error.value)
    assert "site/host-system.yaml:12" in str(error.value)
    monkeypatch.setenv(downloads.OFFLINE_VARIABLE, "1")
    pinned = dict(spec, sha256=good, url=f"{base}/moved")
    assert downloads.resolve(_cache(tmp_path), pinned, _problem) == b"plain content\n"
    assert hits == ["/file"]


def test_offline_without_cache_names_the_entry(tmp_path, monkeypatch):
    monkeypatch.setenv(downloads.OFFLINE_VARIABLE, "1")
    spec = {"path": "/usr/local/bin/kubelet", "mode": 0o555, "url": "http://127.0.0.1:9/kubelet"}
    with pytest.raises(PromenadeError) as error:
        downloads.resolve(_cache(tmp_path), spec, _problem)
    text = str(error.value)
    assert "/usr/local/bin/kubelet" in text and "PROMENADE_OFFLINE" in text
    assert "[promenade/HostSystem/v1 host-system] at .data.files[0]" in text


def test_retries_are_bounded(server, tmp_path):
    base, hits = server
    with pytest.raises(PromenadeError, match="failed after 3 attempt"):
        downloads.resolve(_cache(tmp_path), {"path": "/x", "mode": 0o644, "url": f"{base}/broken"}, _problem)
    assert hits == ["/broken"] * 3
    hits.clear()
    with pytest.raises(PromenadeError, match="HTTP 404"):
        downloads.resolve(_cache(tmp_path), {"path": "/x", "mode": 0o644, "url": f"{base}/absent"}, _problem)
    assert hits == ["/absent"]  # client errors are not retried
