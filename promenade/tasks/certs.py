"""Task family: the cluster PKI (``doit certs``), its expiry report and renewal.

* ``certs_requests``: splits the site's PKICatalog documents into one request file per CA,
  certificate and key pair under ``state/pki/requests/`` (rewritten only when they change).
* ``certs``: one task per CA (``certs:ca-<name>``), certificate (``certs:cert-<name>``) and key
  pair (``certs:keypair-<name>``), each writing ``state/pki/<kind>/<name>.json``; then
  ``certs:assemble`` writes ``certificates.yaml``. A certificate is re-issued when its request
  or its CA changes (the CA's output is one of its ``file_dep``).
* ``certs_check``: expiry table (``format=json`` for JSON, ``warn=DAYS`` window, default 120);
  fails when anything is expired.
* ``certs_renew name=X`` (or ``name=all``): drops the chosen outputs, then runs ``certs``, which
  re-issues them with the same subject and SANs (and a renewed CA's certificates with it).
* ``certs_uptodate``: what ``render_final`` waits for. It has ``certs`` as its *setup*, so doit
  looks at the (thousands of) certificate tasks only when the PKI requests or
  ``certificates.yaml`` changed, not whenever a site file did.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from urllib.parse import quote

from doit import get_var
from doit.exceptions import TaskFailed
from doit.tools import config_changed

from .. import store
from ..config import PKI_CATALOG, PKI_SCHEMAS
from ..errors import PromenadeError
from ..fileio import SECRET_MODE, atomic_write, remove_quietly
from .options import state_dir
from .render import SITE_STORE, certificates_file, certificates_unchanged
from .reporting import user_errors

REQUESTS_INDEX = "requests.json"


def pki_dir(*parts: str) -> str:
    """A path under ``<out>/state/pki``."""
    return state_dir("pki", *parts)


def _item_file(root: str, kind: str, name: str) -> str:
    return os.path.join(root, kind, quote(name, safe="-_.") + ".json")


def _read_json(path: str):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _write_json(path: str, value) -> bool:
    return atomic_write(path, json.dumps(value, indent=1, sort_keys=True) + "\n", SECRET_MODE)


def _pki():
    """:mod:`promenade.pki`, imported by the actions only: creating tasks never loads ``cryptography``."""
    from .. import pki

    return pki


def _request_digest(request: dict) -> str:
    return hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()


def _prune(root: str, wanted: set[str]) -> None:
    for directory, _dirs, files in os.walk(root):
        for filename in files:
            path = os.path.join(directory, filename)
            if path not in wanted:
                remove_quietly(path)


# --- actions -----------------------------------------------------------------------------------

@user_errors
def write_requests(site_store: str, root: str) -> None:
    """Plan the PKI from the site store; write the request files and their index."""
    pki = _pki()
    docs = store.load_documents(site_store, [PKI_CATALOG, *PKI_SCHEMAS])
    requests, locations = pki.plan([d for d in docs if d.schema == PKI_CATALOG], docs)
    items, wanted_requests, wanted_outputs = [], set(), set()
    for request, where in zip(requests, locations):
        path = _item_file(os.path.join(root, "requests"), request["kind"], request["name"])
        output = _item_file(root, request["kind"], request["name"])
        _write_json(path, request)
        wanted_requests.add(path)
        wanted_outputs.add(output)
        items.append({"kind": request["kind"], "name": request["name"], "ca": request.get("ca"),
                      "request": path, "output": output, "where": where, "sha256": _request_digest(request)})
    global _keys
    _keys = pki.KeyPool({_key_name(item): request["algorithm"] for item, request in zip(items, requests)
                         if not request.get("provided") and not _still_current(item)})
    _prune(os.path.join(root, "requests"), wanted_requests)
    for kind in pki.PAIRS:
        _prune(os.path.join(root, kind), wanted_outputs)
    _write_json(os.path.join(root, REQUESTS_INDEX), {"items": items})


_keys = None  # a pki.KeyPool of what the requests written by this process need


def _key_name(item: dict) -> str:
    return f"{item['kind']}:{item['name']}"


def _still_current(item: dict) -> bool:
    """Whether the item's output was made for its current request (then no new key is needed)."""
    try:
        return _read_json(item["output"]).get("request_sha256") == item["sha256"]
    except (OSError, ValueError):
        return False


@user_errors
def make_item(item: dict, ca_output: str | None) -> None:
    """Generate (or check and reuse) one CA, certificate or key pair.

    Material generated earlier for the same request is kept while it is still good (key
    matches, not expired, issued by the current CA): a lost or reset doit state, or a new
    Promenade version, never re-mints keys by itself.
    """
    pki = _pki()
    request = _read_json(item["request"])
    ca = _read_json(ca_output) if ca_output else None
    digest = item["sha256"]  # _request_digest of the request file, recorded when it was written
    if os.path.exists(item["output"]):
        previous = _read_json(item["output"])
        if (previous.get("request_sha256") == digest and not previous.get("provided")
                and not pki.differences({**request, "provided": previous}, ca and ca["public"])):
            return
    material = pki.fulfil(request, item["where"], ca, _keys.take(_key_name(item)) if _keys else None)
    if not material["provided"]:
        material["request_sha256"] = digest
    _write_json(item["output"], material)


@user_errors
def assemble(index: str, target: str) -> None:
    """Write ``certificates.yaml`` (0600) from every generated item, in catalog order."""
    if not os.path.exists(index):  # only reached with `doit --continue` after render failed
        raise PromenadeError(f"{index} is missing: the site did not render, fix the problems above first")
    items = _read_json(index)["items"]
    fulfilled = [(_read_json(i["request"]), _read_json(i["output"])) for i in items]
    atomic_write(target, _pki().certificates_yaml(fulfilled), SECRET_MODE)


def _row_without_certificate(item: dict, status: str, source: str) -> dict:
    return {"name": item["name"], "kind": item["kind"], "issuer": "", "not_after": "", "days_left": "",
            "status": status, "source": source}


@user_errors
def check(index: str, output_format: str, warn_days: str | None):
    """Print the expiry report of every CA and certificate; fail if anything is expired."""
    pki = _pki()
    if warn_days is None:
        warn_days = str(pki.DEFAULT_WARN_DAYS)
    if output_format not in ("table", "json"):
        raise PromenadeError(f"format={output_format!r}: use format=table (default) or format=json")
    try:
        warn = int(warn_days)
    except ValueError:
        raise PromenadeError(f"warn={warn_days!r} must be a number of days") from None
    rows = []
    for item in _read_json(index)["items"]:
        if item["kind"] == "keypair":
            continue
        request = _read_json(item["request"])
        if request.get("provided"):
            material = dict(request["provided"], provided=True)
        elif os.path.exists(item["output"]):
            material = _read_json(item["output"])
        else:
            rows.append(_row_without_certificate(item, "missing", "generated"))
            continue
        try:
            rows.append(pki.expiry_row(request, material, warn))
        except ValueError:  # the site's PEM is not a certificate
            rows.append(_row_without_certificate(item, "unreadable", "site"))
    print(json.dumps(rows, indent=1) if output_format == "json" else pki.format_table(rows))
    soon = [row["name"] for row in rows if row["status"] == "warning"]
    if soon:
        print(f"warning: {', '.join(soon)} expire within {warn} days", file=sys.stderr)
    expired = [row["name"] for row in rows if row["status"] == "expired"]
    if expired:
        print(f"expired: {', '.join(expired)}; renew with `doit certs_renew name=NAME` (what the site "
              "provides: replace it in the site)", file=sys.stderr)
        return TaskFailed(f"{len(expired)} expired", report=False)
    return None


@user_errors
def forget_for_renewal(index: str, which: str) -> None:
    """Drop the outputs of what ``name=`` names so that ``certs`` issues them again.

    ``all`` means every generated certificate; a CA's certificates follow it because they are
    no longer signed by the current CA. Site-provided material is the site's to change.
    """
    items = _read_json(index)["items"]
    names = set(filter(None, which.split(",")))
    if not names:
        raise PromenadeError("say what to renew: `doit certs_renew name=NAME[,NAME]` or `name=all`")
    unknown = names - {"all"} - {i["name"] for i in items}
    if unknown:
        raise PromenadeError(f"no CA, certificate or key pair named {', '.join(sorted(unknown))}")
    chosen = [i for i in items if i["name"] in names or ("all" in names and i["kind"] == "cert")]
    site_owned = [i for i in chosen if _read_json(i["request"]).get("provided")]
    if site_owned and "all" not in names:
        raise PromenadeError(f"{', '.join(i['name'] for i in site_owned)}: provided by the site; delete its "
                             "documents from the site and run `doit certs` to have Promenade issue new ones")
    for item in chosen:
        if item in site_owned:
            print(f"kept {item['kind']} {item['name']}: provided by the site")
        else:
            remove_quietly(item["output"])
            print(f"renewing {item['kind']} {item['name']}")


def requests_index() -> str:
    """The PKI request index: it holds every request's sha256, so it changes whenever
    what ``certificates.yaml`` is made from does."""
    return pki_dir(REQUESTS_INDEX)


# --- tasks ----------------------------------------------------------------------------------

def requests_task() -> dict:
    """``certs_requests``: one request file per CA, certificate and key pair."""
    site_store = state_dir(*SITE_STORE)
    # a schema's digest file exists while the store holds documents of it (cheaper than the index)
    stamps = {schema: store.schema_stamp(site_store, schema) for schema in sorted({PKI_CATALOG, *PKI_SCHEMAS})}
    present = [schema for schema, stamp in stamps.items() if os.path.exists(stamp)]
    return {
        "actions": [(write_requests, [site_store, pki_dir()])],
        "file_dep": [stamps[schema] for schema in present],
        "targets": [pki_dir(REQUESTS_INDEX)],
        "uptodate": [config_changed(" ".join(present))],
    }


def certs_tasks():
    """``certs``: one task per CA, certificate and key pair, then ``assemble``."""
    index = pki_dir(REQUESTS_INDEX)
    items = _read_json(index)["items"] if os.path.exists(index) else []  # none yet for `doit list`
    ca_outputs = {item["name"]: item["output"] for item in items if item["kind"] == "ca"}
    for item in items:
        ca_output = ca_outputs[item["ca"]] if item["kind"] == "cert" else None
        yield {"name": f"{item['kind']}-{item['name']}", "actions": [(make_item, [item, ca_output])],
               "file_dep": [item["request"]] + ([ca_output] if ca_output else []), "targets": [item["output"]]}
    yield {"name": "assemble", "actions": [(assemble, [index, certificates_file()])],
           "file_dep": [item["output"] for item in items], "targets": [certificates_file()]}


def uptodate_task() -> dict:
    """``certs_uptodate``: runs ``certs`` (its setup) only when the requests or certificates.yaml changed."""
    return {"actions": [], "file_dep": [requests_index()],
            "uptodate": [(certificates_unchanged, [certificates_file()])], "setup": ["certs"]}


def check_task() -> dict:
    """``certs_check``: the expiry report."""
    return {"actions": [(check, [pki_dir(REQUESTS_INDEX), get_var("format", "table"),
                                 get_var("warn", None)])],
            "task_dep": ["certs_requests"], "uptodate": [False], "verbosity": 2}


def renew_tasks(doc: str):
    """``certs_renew`` (documented by ``doc``) and the hidden task that drops what it re-issues."""
    yield {"basename": "_certs_renew_forget", "doc": "drop what certs_renew re-issues",
           "actions": [(forget_for_renewal, [pki_dir(REQUESTS_INDEX), get_var("name", "")])],
           "task_dep": ["certs_requests"], "uptodate": [False], "verbosity": 2}
    yield {"basename": "certs_renew", "doc": doc, "actions": None,
           "task_dep": ["_certs_renew_forget", "certs"]}
