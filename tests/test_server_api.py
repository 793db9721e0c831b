"""The original API (join-scripts, validatedesign) against a real `doit build` of the embedded site."""

from __future__ import annotations

import os
import shutil

import httpx
import pytest
import yaml

from doitrun import DOIT, ROOT, doit, executed
from promenade import auth, store
from promenade.config import NODE
from test_server import Server, assert_status_json, bearer, design_server

SITE = os.path.join(ROOT, "site")


def strip_nodes(directory):
    """Remove every concrete KubernetesNode document from the YAML files below ``directory``."""
    for folder, _dirs, files in os.walk(directory):
        for name in files:
            path = os.path.join(folder, name)
            with open(path) as handle:
                docs = list(yaml.safe_load_all(handle))
            kept = [doc for doc in docs if doc and not (
                doc.get("schema") == NODE and not doc["metadata"].get("layeringDefinition", {}).get("abstract"))]
            if len(kept) != len([doc for doc in docs if doc]):
                with open(path, "w") as handle:
                    yaml.safe_dump_all(kept, handle, explicit_start=True)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    site, out, design = root / "site", root / "build", root / "design"
    shutil.copytree(SITE, site)
    doit("certs", "build", "tokens", site=site, out=out)
    shutil.copytree(site, design)
    strip_nodes(design)
    shutil.copy(out / "certificates.yaml", design / "certificates.yaml")
    with open(out / "tokens.yaml") as handle:
        tokens = yaml.safe_load(handle)
    return {"root": root, "site": site, "out": out, "design": design, "tokens": tokens}


@pytest.fixture(scope="module")
def server(built):
    srv = Server(built["out"], "--design-root", str(built["root"])).wait_ready()
    yield srv
    srv.stop()


def node_params(built, name="n1", design_ref=None):
    """Query parameters describing node ``name`` exactly as the rendered site does."""
    data = store.load_document(str(built["out"] / "state" / "rendered"), NODE, name).data
    return {
        "design_ref": design_ref or str(built["design"]),
        "hostname": data["hostname"], "ip": data["ip"],
        "external_ip": data.get("external_ip", "127.0.0.1"), "domain": data.get("domain", "local"),
        "labels.static": data["labels"].get("static", []), "labels.dynamic": data["labels"].get("dynamic", []),
    }


def join_script(server, params, token):
    return httpx.get(f"{server.url}/api/v1.0/join-scripts", params=params, headers=bearer(token), timeout=120)


def cached_scripts(built):
    folder = built["out"] / "cache" / "join-scripts"
    return {name: os.stat(folder / name).st_mtime_ns for name in os.listdir(folder)} if folder.exists() else {}


def test_on_demand_join_script_equals_the_built_one_and_is_cached(server, built):
    expected = (built["out"] / "join-n1.sh").read_bytes()
    first = join_script(server, node_params(built), built["tokens"]["nodes"]["n1"])
    assert first.status_code == 200, first.text
    assert first.headers["content-type"] == "text/x-shellscript"
    assert first.content == expected
    cache = cached_scripts(built)
    assert len(cache) == 1
    again = join_script(server, node_params(built), built["tokens"]["provisioner"])
    assert again.content == expected and again.headers["etag"] == first.headers["etag"]
    assert cached_scripts(built) == cache
    kept = join_script(server, {**node_params(built), "leave_kubectl": "true"}, built["tokens"]["provisioner"])
    assert kept.status_code == 200 and kept.content != expected
    assert len(cached_scripts(built)) == 2


def test_design_ref_by_file_and_http_url(server, built):
    expected = (built["out"] / "join-n1.sh").read_bytes()
    token = built["tokens"]["nodes"]["n1"]
    by_file = join_script(server, node_params(built, design_ref=f"file://{built['design']}"), token)
    assert by_file.content == expected
    files = sorted(str(path) for path in built["design"].rglob("*.yaml"))
    web = design_server(b"".join(open(path, "rb").read() + b"\n" for path in files))
    try:
        url = f"http://127.0.0.1:{web.server_port}/revisions/1/rendered-documents"
        assert join_script(server, node_params(built, design_ref=url), token).content == expected
        web.body = b""
        body = assert_status_json(join_script(server, node_params(built, design_ref=url), token), 400)
        assert "HTTP 404" in body["message"]
    finally:
        web.shutdown()


def test_join_scripts_credentials(server, built):
    params = node_params(built)
    assert_status_json(join_script(server, params, built["tokens"]["nodes"]["n2"]), 403)
    assert_status_json(httpx.get(f"{server.url}/api/v1.0/join-scripts", params=params), 401)


@pytest.mark.parametrize("change, words", [
    ({"ip": None}, "missing required parameter(s): ip"),
    ({"ip": "10.0.0.300"}, "not an IPv4 address"),
    ({"hostname": "N1_bad"}, "hostname"),
    ({"labels.dynamic": ["no-equals-sign"]}, "key=value"),
    ({"leave_kubectl": "maybe"}, "leave_kubectl"),
    ({"colour": "blue"}, "unknown query parameter"),
    ({"design_ref": "/etc"}, "outside the design directories"),
    ({"design_ref": "ftp://example.invalid/site"}, "not supported"),
])
def test_join_scripts_bad_input_is_a_400(server, built, change, words):
    params = {key: value for key, value in {**node_params(built), **change}.items() if value is not None}
    body = assert_status_json(join_script(server, params, built["tokens"]["provisioner"]), 400)
    assert words in body["message"]


def test_join_scripts_rejects_design_with_that_node_and_names_broken_files(server, built, tmp_path):
    full = built["root"] / "full"
    shutil.copytree(built["site"], full)
    shutil.copy(built["out"] / "certificates.yaml", full / "certificates.yaml")
    clash = assert_status_json(join_script(server, node_params(built, design_ref=str(full)),
                                           built["tokens"]["provisioner"]), 400)
    assert "name 'n1' is also used by the design's promenade/KubernetesNode/v1 n1" in str(
        clash["details"]["messageList"])
    broken = built["root"] / "broken"
    shutil.copytree(built["design"], broken)
    (broken / "zz-broken.yaml").write_text("---\nschema: promenade/Oops/v1\nmetadata: [\n")
    body = assert_status_json(join_script(server, node_params(built, design_ref=str(broken)),
                                          built["tokens"]["provisioner"]), 400)
    assert f"{broken / 'zz-broken.yaml'}:" in body["details"]["messageList"][0]["message"]


def test_reprovisioned_genesis_host_joins_as_a_node_but_node_clashes_are_refused(server, built, tmp_path):
    """A node's view excludes the Genesis document: n0 may rejoin as a worker; its script checks for n0.

    The design is the site with the resiliency gate's kubelet-n0 certificate, as the gate has it.
    """
    full = built["root"] / "with-nodes"
    shutil.copytree(built["site"], full)
    shutil.copytree(os.path.join(ROOT, "gates", "overlays", "rejoin-genesis"), full, dirs_exist_ok=True)
    doit("certs", site=full, out=tmp_path / "out")
    shutil.copy(tmp_path / "out" / "certificates.yaml", full / "certificates.yaml")
    params = {"design_ref": str(full), "hostname": "n0", "ip": "192.168.77.10",
              "labels.dynamic": ["ucp-control-plane=enabled"]}
    rejoin = join_script(server, params, built["tokens"]["provisioner"])
    assert rejoin.status_code == 200, rejoin.text
    assert b"EXPECTED_HOSTNAME=n0\n" in rejoin.content and b"ucp-control-plane=enabled" in rejoin.content
    clash = assert_status_json(join_script(server, {**params, "ip": "192.168.77.12"},
                                           built["tokens"]["provisioner"]), 400)
    messages = [item["message"] for item in clash["details"]["messageList"]]
    assert any("IP address '192.168.77.12' is also used by the design's promenade/KubernetesNode/v1 n2" in m
               for m in messages), messages


def validate(server, token, json_body=None, content=None, content_type=None):
    headers = bearer(token) | ({"Content-Type": content_type} if content_type else {})
    return httpx.post(f"{server.url}/api/v1.0/validatedesign", json=json_body, content=content, headers=headers,
                      timeout=120)


def test_validatedesign_success_and_failure(server, built):
    provisioner = built["tokens"]["provisioner"]
    ok = validate(server, provisioner, {"rel": "design", "href": str(built["design"]), "type": "application/x-yaml"})
    assert ok.status_code == 200, ok.text
    assert ok.json()["status"] == "Success" and ok.json()["details"]["errorCount"] == 0
    broken = built["root"] / "invalid"
    shutil.copytree(built["design"], broken)
    genesis = next(path for path in broken.rglob("*.yaml") if "promenade/Genesis/v1" in path.read_text()
                   and "abstract: false" in path.read_text())
    genesis.write_text(genesis.read_text().replace("hostname:", "hostnmae:", 1))
    failed = validate(server, provisioner, {"href": f"file://{broken}"})
    assert failed.status_code == 400
    body = failed.json()
    assert body["status"] == "Failure" and body["code"] == "400 Bad Request"
    assert body["details"]["errorCount"] == len(body["details"]["messageList"]) >= 1
    assert any(str(genesis) in item["diagnostic"] for item in body["details"]["messageList"])
    assert all(item["kind"] == "ValidationMessage" and item["level"] == "Error" for item in body["details"]["messageList"])


def test_validatedesign_bad_requests(server, built):
    provisioner = built["tokens"]["provisioner"]
    assert_status_json(validate(server, built["tokens"]["nodes"]["n1"], {"href": str(built["design"])}), 403)
    assert_status_json(validate(server, provisioner, {"rel": "design"}), 400)
    assert_status_json(validate(server, provisioner, content=b"{not json", content_type="application/json"), 400)
    assert_status_json(validate(server, provisioner, content=b"href=x",
                                content_type="application/x-www-form-urlencoded"), 415)
    assert_status_json(validate(server, provisioner, {"href": "x" * 70000}), 413)


def test_tokens_task_writes_private_tokens_that_verify(built):
    out = built["out"]
    for path in (out / "tokens.yaml", out / "state" / auth.SECRET_FILE):
        assert os.stat(path).st_mode & 0o777 == 0o600
    secret = auth.load_secret(str(out / "state"))
    assert sorted(built["tokens"]["nodes"]) == ["n1", "n2", "n3"]
    for name, token in built["tokens"]["nodes"].items():
        assert auth.verify_token(secret, token) == auth.Identity(auth.NODE, name)
    assert auth.verify_token(secret, built["tokens"]["provisioner"]).kind == auth.PROVISIONER
    assert executed(doit("tokens", site=built["site"], out=built["out"])) == []


def test_doit_serve_runs_the_server_and_leaves_the_build_unlocked(built):
    srv = Server(built["out"], command=lambda port: [*DOIT, "serve", f"site={built['site']}",
                                                     f"out={built['out']}", f"port={port}"]).wait_ready()
    try:
        response = httpx.get(f"{srv.url}/join-n2.sh", headers=bearer(built["tokens"]["nodes"]["n2"]))
        assert response.content == (built["out"] / "join-n2.sh").read_bytes()
        doit("tokens", site=built["site"], out=built["out"])  # the build directory is not locked by serving
    finally:
        assert srv.stop() == 0
