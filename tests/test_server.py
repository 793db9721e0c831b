"""The HTTP server on loopback with a real client: static files, credentials, limits, logging, shutdown."""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import http.client
import http.server
import io
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

import httpx
import pytest
import yaml

from doitrun import ROOT
from promenade import auth
from promenade.fileio import SECRET_MODE, atomic_write

SCRIPT = b"#!/usr/bin/env bash\nset -euo pipefail\necho join n1\n"
BLOB = b"shared payload bytes\n" * 100


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``python -m promenade.server`` (or ``command(port)``) on a free loopback port, logging to a file."""

    def __init__(self, out, *args, scheme="http", command=None):
        self.port = free_port()
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.log_path = os.path.join(out, "..", f"server-{self.port}.log")
        self.log = open(self.log_path, "w")
        argv = command(self.port) if command else [
            sys.executable, "-m", "promenade.server", "--out", str(out), "--port", str(self.port), *args]
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, **client_options) -> "Server":
        for _ in range(100):
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}:\n{self.read_log()}")
            try:
                if httpx.get(f"{self.url}/api/v1.0/health", **client_options).status_code == 204:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server did not start:\n{self.read_log()}")

    def stop(self) -> int:
        """SIGTERM, then the exit status (the server must stop by itself)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=20)
        finally:
            self.log.close()

    def read_log(self) -> str:
        self.log.flush()
        with open(self.log_path) as handle:
            return handle.read()


def make_build(out) -> dict:
    """A fake build directory with scripts, private files and blobs; returns the tokens."""
    os.makedirs(out, mode=0o700)
    for name in ("join-n1.sh", "join-n2.sh", "validate-n1.sh", "genesis.sh", "validate-cluster.sh"):
        atomic_write(os.path.join(out, name), SCRIPT.replace(b"n1", name.encode()), SECRET_MODE)
    atomic_write(os.path.join(out, "certificates.yaml"), "private: key\n", SECRET_MODE)
    atomic_write(os.path.join(out, "state", "site", "index.json"), '{"documents": []}', SECRET_MODE)
    atomic_write(os.path.join(out, "cache", "join-scripts", "x.sh"), "cached\n", SECRET_MODE)
    atomic_write(os.path.join(out, ".doit.db"), "db", SECRET_MODE)
    atomic_write(os.path.join(out, "blobs", hashlib.sha256(BLOB).hexdigest()), BLOB)
    os.symlink("/etc/passwd", os.path.join(out, "passwd"))
    path = auth.write_tokens(str(out), os.path.join(out, "state"), ["n1", "n2"])
    with open(path) as handle:
        return yaml.safe_load(handle)


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    out = tmp_path_factory.mktemp("serve") / "build"
    tokens = make_build(out)
    return out, tokens


@pytest.fixture(scope="module")
def server(build):
    out, _tokens = build
    srv = Server(out, "--design-root", str(out.parent)).wait_ready()
    yield srv
    srv.stop()


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def assert_status_json(response, code):
    assert response.status_code == code
    body = response.json()
    assert body["kind"] == "status" and body["status"] == "Failure"
    assert body["code"].startswith(str(code))
    assert body["details"]["errorCount"] == len(body["details"]["messageList"]) >= 1
    return body


def test_versions_and_health(server):
    assert httpx.get(f"{server.url}/versions").json() == {"v1.0": {"path": "/api/v1.0", "status": "stable"}}
    health = httpx.get(f"{server.url}/api/v1.0/health")
    assert health.status_code == 204 and health.content == b""


def test_node_token_fetches_only_its_own_scripts(server, build):
    _out, tokens = build
    n1 = tokens["nodes"]["n1"]
    own = httpx.get(f"{server.url}/join-n1.sh", headers=bearer(n1))
    assert own.status_code == 200
    assert own.headers["content-type"] == "text/x-shellscript"
    assert own.content == SCRIPT.replace(b"n1", b"join-n1.sh")
    assert int(own.headers["content-length"]) == len(own.content)
    assert httpx.get(f"{server.url}/validate-n1.sh", headers=bearer(n1)).status_code == 200
    assert_status_json(httpx.get(f"{server.url}/join-n2.sh", headers=bearer(n1)), 403)
    assert_status_json(httpx.get(f"{server.url}/genesis.sh", headers=bearer(n1)), 403)
    missing = assert_status_json(httpx.get(f"{server.url}/join-n1.sh"), 401)
    assert "credentials" in missing["message"]
    forged = n1[:-4] + ("0000" if not n1.endswith("0000") else "1111")
    assert_status_json(httpx.get(f"{server.url}/join-n1.sh", headers=bearer(forged)), 401)
    assert_status_json(httpx.get(f"{server.url}/join-n1.sh", headers=bearer("node:n1")), 401)


def test_credential_in_query_or_x_auth_token_and_provisioner_reads_all(server, build):
    _out, tokens = build
    n2 = tokens["nodes"]["n2"]
    assert httpx.get(f"{server.url}/join-n2.sh", params={"token": n2}).status_code == 200
    assert httpx.get(f"{server.url}/join-n2.sh", headers={"X-Auth-Token": n2}).status_code == 200
    keystone = {"X-Auth-Token": "gAAAAABkeystone-token"}  # what promenade+http locations send
    assert httpx.get(f"{server.url}/join-n2.sh", params={"token": n2}, headers=keystone).status_code == 200
    assert_status_json(httpx.get(f"{server.url}/join-n2.sh", headers=keystone), 401)
    for name in ("join-n1.sh", "join-n2.sh", "genesis.sh", "validate-cluster.sh"):
        assert httpx.get(f"{server.url}/{name}", headers=bearer(tokens["provisioner"])).status_code == 200


def test_blobs_and_listing_are_public(server, build):
    out, _tokens = build
    digest = hashlib.sha256(BLOB).hexdigest()
    blob = httpx.get(f"{server.url}/blobs/{digest}")
    assert blob.status_code == 200 and blob.content == BLOB
    assert "immutable" in blob.headers["cache-control"]
    listing = httpx.get(f"{server.url}/sha256sums")
    assert listing.headers["content-type"].startswith("text/plain")
    lines = dict(reversed(line.split("  ")) for line in listing.text.splitlines())
    assert sorted(lines) == sorted([f"blobs/{digest}", "genesis.sh", "join-n1.sh", "join-n2.sh",
                                    "validate-cluster.sh", "validate-n1.sh"])
    for relpath, digest_listed in lines.items():
        with open(out / relpath, "rb") as handle:
            assert hashlib.sha256(handle.read()).hexdigest() == digest_listed


def raw_get(server, target, headers=()):
    """A request with the target sent verbatim (no client-side normalisation)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.putrequest("GET", target, skip_accept_encoding=True)
        for key, value in headers:
            connection.putheader(key, value)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.parametrize("target", [
    "/../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/blobs/..%2f..%2fetc%2fpasswd", "/state/site/index.json",
    "/cache/join-scripts/x.sh", "/.doit.db", "/certificates.yaml", "/tokens.yaml", "/passwd", "/blobs/",
    "/blobs//x", "/nonexistent.sh", "/" + "d" * 300 + "/join-n1.sh",
])
def test_private_or_outside_paths_are_not_found(server, build, target):
    _out, tokens = build
    status, body = raw_get(server, target, [("Authorization", f"Bearer {tokens['provisioner']}")])
    assert status in (400, 404), (target, status)
    assert b"root:" not in body and b"private" not in body
    assert json.loads(body)["status"] == "Failure"


def test_etag_304_and_head(server, build):
    _out, tokens = build
    headers = bearer(tokens["nodes"]["n1"])
    first = httpx.get(f"{server.url}/join-n1.sh", headers=headers)
    etag = first.headers["etag"]
    assert etag == f'"{hashlib.sha256(first.content).hexdigest()}"'
    cached = httpx.get(f"{server.url}/join-n1.sh", headers={**headers, "If-None-Match": etag})
    assert cached.status_code == 304 and cached.content == b"" and cached.headers["etag"] == etag
    stale = httpx.get(f"{server.url}/join-n1.sh", headers={**headers, "If-None-Match": '"other"'})
    assert stale.status_code == 200
    head = httpx.head(f"{server.url}/join-n1.sh", headers=headers)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(first.content)) and head.headers["etag"] == etag
    assert httpx.head(f"{server.url}/join-n1.sh").status_code == 401


def test_rebuild_switches_content_atomically(server, build):
    out, tokens = build
    headers = bearer(tokens["nodes"]["n2"])
    before = httpx.get(f"{server.url}/join-n2.sh", headers=headers)
    new = SCRIPT + b"echo rebuilt\n"
    atomic_write(str(out / "join-n2.sh"), new, SECRET_MODE)
    after = httpx.get(f"{server.url}/join-n2.sh", headers=headers)
    assert after.content == new and after.headers["etag"] != before.headers["etag"]
    assert httpx.get(f"{server.url}/join-n2.sh",
                     headers={**headers, "If-None-Match": before.headers["etag"]}).status_code == 200


def test_bad_requests_get_clean_status_answers(server, build):
    _out, tokens = build
    headers = bearer(tokens["provisioner"])
    body = assert_status_json(httpx.get(f"{server.url}/join-n1.sh", params={"x": "1"}, headers=headers), 400)
    assert "unknown query parameter" in body["message"]
    assert_status_json(httpx.get(f"{server.url}/versions", params={"x": "1"}), 400)
    assert_status_json(httpx.get(f"{server.url}/join-n1.sh?token=a&token=b"), 400)
    assert_status_json(httpx.get(f"{server.url}/join-n1.sh", params={"pad": "x" * 9000}), 414)
    assert_status_json(httpx.get(f"{server.url}/versions", headers={"X-Pad": "x" * 17000}), 431)
    assert_status_json(httpx.post(f"{server.url}/join-n1.sh", headers=headers), 405)
    assert_status_json(httpx.delete(f"{server.url}/versions"), 405)


def test_access_log_has_one_line_per_request_and_no_token(server, build):
    _out, tokens = build
    token = tokens["nodes"]["n1"]
    marker = f"/join-n1.sh?marker={time.time()}"
    httpx.get(f"{server.url}/join-n1.sh", params={"token": token})
    httpx.get(f"{server.url}/join-n2.sh", headers=bearer(token))
    time.sleep(0.2)
    log = server.read_log()
    assert token not in log and token.rsplit(":", 1)[1] not in log
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert records and all(set(r) == {"time", "client", "method", "path", "node", "status", "bytes", "duration_ms"}
                           for r in records)
    assert {"path": "/join-n1.sh", "node": "n1", "status": 200, "client": "127.0.0.1"}.items() <= records[-2].items()
    assert records[-2]["bytes"] == len(SCRIPT.replace(b"n1", b"join-n1.sh"))
    assert {"path": "/join-n2.sh", "node": "n2", "status": 403}.items() <= records[-1].items()
    assert marker not in log


class DesignHandler(http.server.BaseHTTPRequestHandler):
    """Answers every GET with the server's ``body`` (404 when empty) after its ``delay``."""

    def do_GET(self):  # noqa: N802 (http.server API)
        time.sleep(self.server.delay)
        body = self.server.body
        self.send_response(200 if body else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def design_server(body: bytes, delay: float = 0.0) -> http.server.ThreadingHTTPServer:
    """A loopback HTTP server handing out ``body``, running in a thread until ``shutdown()``."""
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), DesignHandler)
    web.body, web.delay = body, delay
    threading.Thread(target=web.serve_forever, daemon=True).start()
    return web


def test_sigterm_finishes_in_flight_requests_and_exits_cleanly(build):
    out, tokens = build
    design = design_server(b"not: [a design\n", delay=1.5)
    srv = Server(out).wait_ready()
    try:
        params = {"design_ref": f"http://127.0.0.1:{design.server_port}/design.yaml", "hostname": "n1",
                  "ip": "192.168.77.11"}
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(httpx.get, f"{srv.url}/api/v1.0/join-scripts", params=params,
                                  headers=bearer(tokens["provisioner"]), timeout=30)
            time.sleep(0.5)
            srv.proc.send_signal(signal.SIGTERM)
            answer = pending.result()
        assert answer.status_code == 400 and "YAML" in json.dumps(answer.json())
        assert srv.stop() == 0
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{srv.url}/versions")
    finally:
        design.shutdown()
        srv.stop()


def test_insecure_switch_serves_scripts_without_credentials(build):
    out, _tokens = build
    srv = Server(out, "--insecure").wait_ready()
    try:
        assert httpx.get(f"{srv.url}/join-n1.sh").status_code == 200
        assert httpx.get(f"{srv.url}/tokens.yaml").status_code == 404
    finally:
        assert srv.stop() == 0


@pytest.mark.parametrize("command", [["-m", "promenade.server"], ["-m", "promenade.cli", "serve"]])
def test_refuses_to_start_without_secret_or_build(tmp_path, command):
    empty = tmp_path / "build"
    empty.mkdir()
    for out, expected in ((empty, "doit tokens"), (tmp_path / "missing", "does not exist")):
        proc = subprocess.run([sys.executable, *command, "--out", str(out), "--port", "1"],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1 and expected in proc.stderr and "Traceback" not in proc.stderr


def test_malformed_http_gets_a_400(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        assert sock.recv(64).startswith(b"HTTP/1.1 400")


def test_tls(build, tmp_path):
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    out, tokens = build
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "promenade-test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    trust = ssl.create_default_context(cafile=str(cert_file))
    srv = Server(out, "--tls-cert", str(cert_file), "--tls-key", str(key_file), scheme="https")
    try:
        srv.wait_ready(verify=trust)
        response = httpx.get(f"{srv.url}/join-n1.sh", headers=bearer(tokens["nodes"]["n1"]), verify=trust)
        assert response.status_code == 200 and response.content.startswith(b"#!/usr/bin/env bash")
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{srv.port}/versions")
    finally:
        assert srv.stop() == 0


def test_unexpected_errors_answer_500_in_status_json(build, monkeypatch):
    from promenade import server

    out, tokens = build
    app = server.create_app(server.ServeConfig(out_dir=str(out), design_roots=[str(out.parent)]))

    def broken(*_args):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(app.site.files, "get", broken)
    monkeypatch.setattr(app.site.designs, "fetch", broken)

    async def requests():
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=("127.0.0.1", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://promenade",
                                     headers=bearer(tokens["provisioner"])) as client:
            return [await client.get("/join-n1.sh"),
                    await client.get("/api/v1.0/join-scripts",
                                     params={"design_ref": str(out), "hostname": "n1", "ip": "10.0.0.1"})]

    for response in asyncio.run(requests()):
        body = assert_status_json(response, 500)
        assert body["retry"] is True and "disk on fire" not in response.text


def in_process(app, requests):
    """The responses of ``requests(client)`` (a coroutine function) from ``app`` without a socket."""

    async def run():
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://promenade") as client:
            return await requests(client)

    return asyncio.run(run())


def test_remembered_routes_still_check_directories_and_files_on_every_request(tmp_path):
    from promenade import server

    out = tmp_path / "build"
    tokens = make_build(out)
    app = server.create_app(server.ServeConfig(out_dir=str(out)))
    digest = hashlib.sha256(BLOB).hexdigest()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / digest).write_bytes(b"outside the build\n")

    async def requests(client):
        first = await client.get(f"/blobs/{digest}")
        script = await client.get("/join-n1.sh", headers=bearer(tokens["nodes"]["n1"]))
        remembered = set(app.site.routes)
        os.rename(out / "blobs", tmp_path / "blobs-moved")
        os.symlink(elsewhere, out / "blobs")
        os.rename(out / "join-n1.sh", tmp_path / "join-n1.sh")
        os.symlink(tmp_path / "join-n1.sh", out / "join-n1.sh")
        return (first, script, remembered, await client.get(f"/blobs/{digest}"),
                await client.get("/join-n1.sh", headers=bearer(tokens["nodes"]["n1"])))

    first, script, remembered, swapped_dir, swapped_file = in_process(app, requests)
    assert first.content == BLOB and script.status_code == 200
    assert remembered == {f"blobs/{digest}", "join-n1.sh"}
    assert swapped_dir.status_code == 404 and b"outside" not in swapped_dir.content
    assert swapped_file.status_code == 404


def test_only_found_files_are_remembered_and_their_number_is_bounded(tmp_path, monkeypatch):
    from promenade import server

    out = tmp_path / "build"
    tokens = make_build(out)
    app = server.create_app(server.ServeConfig(out_dir=str(out)))
    monkeypatch.setattr(server, "ROUTE_CAPACITY", 2)
    names = ("join-n1.sh", "join-n2.sh", "genesis.sh")

    async def requests(client):
        headers = bearer(tokens["provisioner"])
        missing = [await client.get(f"/missing-{n}.sh", headers=headers) for n in range(3)]
        after_missing = set(app.site.routes)
        found = [await client.get(f"/{name}", headers=headers) for name in names]
        return missing, after_missing, found

    missing, after_missing, found = in_process(app, requests)
    assert {r.status_code for r in missing} == {404} and after_missing == set()
    assert [r.status_code for r in found] == [200, 200, 200]
    assert len(app.site.routes) <= 2 and "genesis.sh" in app.site.routes
    assert found[0].headers["content-type"] == "text/x-shellscript"
    assert found[0].headers["cache-control"] == "private, no-cache"


def test_access_log_lines_are_json_with_escaped_fields():
    from promenade import server

    stream = io.StringIO()
    log = server.AccessLog(stream)
    path = '/odd "name"\\ é\n.sh'
    scopes = [{"client": ("::1", 5), "method": "GET", "path": path, "state": {"node": 'n"1'}},
              {"client": None, "method": "HEAD", "path": "/x", "state": {}}]

    async def record():
        for scope in scopes:
            log.add(scope, 200, 12, 0.0015)
        await asyncio.sleep(0)

    before = time.gmtime()
    asyncio.run(record())
    after = time.gmtime()
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first == {"time": first["time"], "client": "::1", "method": "GET", "path": path, "node": 'n"1',
                     "status": 200, "bytes": 12, "duration_ms": 1.5}
    assert time.strftime("%Y-%m-%dT%H:%M:%SZ", before) <= first["time"] <= time.strftime("%Y-%m-%dT%H:%M:%SZ", after)
    assert (second["client"], second["node"], second["method"]) == ("-", "-", "HEAD")
    assert stream.getvalue().isascii()


def read_until_quiet(sock, seconds=1.0) -> bytes:
    """Everything ``sock`` receives until it stays silent for ``seconds`` or closes."""
    sock.settimeout(seconds)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        pass
    return data


def test_pipelined_requests_get_their_answers_in_order(server, build):
    out, tokens = build
    auth_line = f"Authorization: Bearer {tokens['nodes']['n1']}\r\n"
    script = (out / "join-n1.sh").read_bytes()
    etag = f'"{hashlib.sha256(script).hexdigest()}"'
    requests = [f"GET /join-n1.sh HTTP/1.1\r\nHost: x\r\n{auth_line}\r\n",
                f"HEAD /join-n1.sh HTTP/1.1\r\nHost: x\r\n{auth_line}\r\n",
                f"GET /join-n1.sh HTTP/1.1\r\nHost: x\r\n{auth_line}If-None-Match: {etag}\r\n\r\n",
                f"GET /join-n2.sh HTTP/1.1\r\nHost: x\r\n{auth_line}\r\n"]
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall("".join(requests).encode())
        data = read_until_quiet(sock)
    answers = []
    while data:
        head, _, data = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ")[1])
        fields = dict(line.lower().split(b": ", 1) for line in head.split(b"\r\n")[1:])
        size = int(fields.get(b"content-length", 0)) if len(answers) != 1 else 0  # HEAD: no body
        answers.append((status, data[:size]))
        data = data[size:]
    assert [status for status, _ in answers] == [200, 200, 304, 403]
    assert answers[0][1] == script and answers[1][1] == answers[2][1] == b""
    assert json.loads(answers[3][1])["code"].startswith("403")


def test_expect_100_continue_is_answered_before_the_body_is_sent(server, build):
    _out, tokens = build
    payload = json.dumps({"href": "/nonexistent"}).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(f"POST /api/v1.0/validatedesign HTTP/1.1\r\nHost: x\r\n"
                     f"Authorization: Bearer {tokens['provisioner']}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(payload)}\r\nExpect: 100-continue\r\n\r\n".encode())
        assert read_until_quiet(sock, 2.0) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(payload)
        assert read_until_quiet(sock).startswith(b"HTTP/1.1 400 ")


class RecordingTransport:
    """The transport calls :class:`promenade.server.HeadWithBody` passes on."""

    def __init__(self):
        self.calls = []
        self.closing = False

    def write(self, data):
        self.calls.append(("write", bytes(data)))

    def writelines(self, chunks):
        self.calls.append(("writelines", [bytes(chunk) for chunk in chunks]))

    def close(self):
        self.calls.append(("close",))
        self.closing = True

    def abort(self):
        self.calls.append(("abort",))
        self.closing = True

    def is_closing(self):
        return self.closing

    def get_write_buffer_size(self):
        return 7

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 1)}.get(name, default)


def test_head_with_body_sends_a_head_and_its_body_in_one_call_and_never_holds_past_the_iteration():
    from promenade import server

    async def scenario():
        transport = RecordingTransport()
        wrapped = server.HeadWithBody(transport, asyncio.get_running_loop())
        wrapped.write(b"head")
        wrapped.write(b"body")
        wrapped.write(b"")
        assert transport.calls == [("writelines", [b"head", b"body"])]
        wrapped.write(b"interim")
        assert wrapped.get_write_buffer_size() == 7 + len(b"interim") and len(transport.calls) == 1
        await asyncio.sleep(0)
        assert transport.calls[1:] == [("write", b"interim")]
        wrapped.write(b"last")
        wrapped.close()
        assert transport.calls[2:] == [("write", b"last"), ("close",)]
        assert wrapped.get_extra_info("peername") == ("127.0.0.1", 1) and wrapped.is_closing()
        gone = RecordingTransport()
        dropped = server.HeadWithBody(gone, asyncio.get_running_loop())
        dropped.write(b"head")
        dropped.abort()
        await asyncio.sleep(0)
        assert gone.calls == [("abort",)]

    asyncio.run(scenario())
