"""The HTTP server: ``build/`` as static files and the original Promenade API, with per-node credentials.

An ASGI application run by uvicorn: files are served by a lean handler of their own (they are
nearly all the traffic), the API by Starlette; each response's head leaves with its body. Files are read whole from one open descriptor
and cached by file identity, so a build that renames new files into place switches each file
atomically. Scripts need a token (:mod:`promenade.auth`) unless the server runs with
``insecure``. Every error answers in the Airship Status JSON shape, and every request leaves
one JSON access-log line without its query string (where a token may travel).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import mimetypes
import os
import re
import signal
import stat
import sys
import time
from collections import OrderedDict
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from json.encoder import encode_basestring_ascii as _json_string  # what json.dumps does for a str
from urllib.parse import parse_qsl

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from . import auth
from .engine import Workspace
from .errors import Problem, PromenadeError
from .ondemand import DesignError, Designs, JoinScripts, NodeRequest, flag, render_design

CONFIG_ENV = "PROMENADE_SERVE_CONFIG"
API = "/api/v1.0"
PRIVATE_FILES = {auth.TOKENS_FILE, "certificates.yaml"}
PRIVATE_DIRS = {"state", "cache"}
PUBLIC_DIRS = {"blobs"}
API_PREFIXES = ("/api/", "/versions", "/sha256sums")
FILE_HEADERS = {b"authorization", b"x-auth-token", b"if-none-match"}
PUBLIC_CACHE = b"public, max-age=31536000, immutable"
PRIVATE_CACHE = b"private, no-cache"
ROUTE_CAPACITY = 4096  # remembered file routes (Site.remember)
NODE_SCRIPT = re.compile(r"^(?:join|validate)-(?P<node>.+)\.sh$")
CONTENT_TYPES = {".sh": "text/x-shellscript", ".yaml": "application/x-yaml", ".yml": "application/x-yaml"}
JOIN_PARAMS = {"design_ref", "hostname", "ip", "external_ip", "domain", "leave_kubectl",
               "labels.dynamic", "labels.static", "token"}
REPEATABLE = {"labels.dynamic", "labels.static"}
MAX_TARGET = 8192
MAX_HEADERS = 16384
MAX_BODY = 65536


@dataclass(frozen=True)
class ServeConfig:
    """Everything a server process needs; passed to uvicorn workers as JSON in the environment."""

    out_dir: str
    design_roots: list[str] = field(default_factory=list)
    insecure: bool = False
    workspace: str | None = None
    blob_url: str | None = None
    cache_bytes: int = 256 << 20
    max_design_bytes: int = 64 << 20
    fetch_timeout: float = 60.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ServeConfig":
        return cls(**json.loads(text))


class ApiError(Exception):
    """An error answer: HTTP status, message and the individual problems."""

    def __init__(self, status: int, message: str, problems: list[str] | None = None,
                 error_type: str = "ApiError", retry: bool = False, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.error_type, self.retry = status, message, error_type, retry
        self.problems = problems if problems is not None else [message]
        self.headers = dict(headers or {})
        if status == 401:
            self.headers["www-authenticate"] = 'Bearer realm="promenade"'


def status_code(status: int) -> str:
    return f"{status} {HTTPStatus(status).phrase}"


def status_json(error: ApiError) -> dict:
    """The Airship Status body of an error."""
    return {
        "kind": "status", "apiVersion": "v1.0", "metadata": {}, "status": "Failure",
        "message": error.message, "reason": HTTPStatus(error.status).phrase,
        "details": {"errorType": error.error_type, "errorCount": len(error.problems),
                    "messageList": [{"message": text, "error": True} for text in error.problems]},
        "code": status_code(error.status), "retry": error.retry,
    }


def error_parts(error: ApiError) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    body = json.dumps(status_json(error)).encode()
    headers = {**error.headers, "content-type": "application/json", "content-length": str(len(body))}
    return error.status, [(key.encode("latin-1"), value.encode("latin-1")) for key, value in headers.items()], body


def error_response(error: ApiError) -> Response:
    return parts_response(*error_parts(error))


def validation_json(problems: list[Problem]) -> dict:
    """The Airship ValidationMessage body of a validatedesign answer."""
    ok = not problems
    return {
        "kind": "Status", "apiVersion": "v1.0", "metadata": {}, "reason": "Validation",
        "status": "Success" if ok else "Failure",
        "message": f"Promenade validations {'succeeded' if ok else 'failed'}",
        "code": status_code(200 if ok else 400),
        "details": {"errorCount": len(problems), "messageList": [
            {"message": p.message, "error": True, "name": p.name or "", "level": "Error",
             "documents": [{"schema": p.schema, "name": p.name}] if p.schema else [],
             "diagnostic": str(p), "kind": "ValidationMessage"} for p in problems]},
    }


class FileEntry:
    """A file's bytes, its identity when read, its strong ETag (the quoted sha256), and the ETag and
    Content-Length header values as bytes, ready for every response of the file."""

    __slots__ = ("identity", "body", "etag", "etag_value", "length_value")

    def __init__(self, identity: tuple, body: bytes):
        self.identity = identity
        self.body = body
        self.etag = f'"{hashlib.sha256(body).hexdigest()}"'
        self.etag_value = self.etag.encode()
        self.length_value = str(len(body)).encode()

    @property
    def sha256(self) -> str:
        return self.etag[1:-1]


class FileCache:
    """Whole files, read once from one descriptor and kept while their identity is unchanged.

    The identity (device, inode, size, mtime) changes whenever a build renames a new file into
    place, so each request sees either the complete old or the complete new content.
    """

    def __init__(self, budget: int):
        self.budget = budget
        self.used = 0
        self.entries: OrderedDict[str, FileEntry] = OrderedDict()

    async def get(self, path: str) -> FileEntry | None:
        """The file's current content, or None if it is not a regular file (symlinks included).

        A cached entry costs one ``lstat``; a new or replaced file is read in a worker thread.
        """
        try:
            info = os.lstat(path)
        except OSError:
            return None
        if not stat.S_ISREG(info.st_mode):
            return None
        entry = self.entries.get(path)
        if entry is not None and entry.identity == _identity(info):
            self.entries.move_to_end(path)
            return entry
        entry = await asyncio.to_thread(_read, path)
        if entry is not None:
            self._store(path, entry)
        return entry

    def _store(self, path: str, entry: FileEntry) -> None:
        old = self.entries.pop(path, None)
        if old is not None:
            self.used -= len(old.body)
        if len(entry.body) > self.budget:
            return
        self.entries[path] = entry
        self.used += len(entry.body)
        while self.used > self.budget:
            _, evicted = self.entries.popitem(last=False)
            self.used -= len(evicted.body)


def _identity(info: os.stat_result) -> tuple:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def _read(path: str) -> FileEntry | None:
    """Read a whole file through one descriptor (never following a symlink)."""
    try:
        with open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as handle:
            info = os.fstat(handle.fileno())
            body = handle.read()
    except OSError:  # vanished, a directory, or a symlink (ELOOP)
        return None
    return FileEntry(_identity(info), body)


def credential(headers, single: dict[str, str]) -> str | None:
    """The request's token: ``Authorization: Bearer``, else ``?token=``, else ``X-Auth-Token``.

    ``headers`` maps lower-case names to values. The query parameter wins over ``X-Auth-Token``
    because Drydock's ``promenade+http`` locations send a Keystone token in that header.
    """
    header = headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return single.get("token") or headers.get("x-auth-token")


def check_params(pairs, allowed: set[str], repeatable: set[str] = frozenset()) -> dict[str, str]:
    """The single-valued query parameters of ``pairs``; unknown or repeated ones are a 400."""
    single: dict[str, str] = {}
    for key, value in pairs:
        if key not in allowed:
            unknown = sorted({k for k, _ in pairs} - allowed)
            raise ApiError(400, f"unknown query parameter(s): {', '.join(unknown)}", error_type="InvalidFormatError")
        if key in repeatable:
            continue
        if key in single:
            raise ApiError(400, f"query parameter {key} may be given only once", error_type="InvalidFormatError")
        single[key] = value
    return single


def content_type(relpath: str) -> str:
    suffix = os.path.splitext(relpath)[1]
    if suffix in CONTENT_TYPES:
        return CONTENT_TYPES[suffix]
    return mimetypes.guess_type(relpath)[0] or "application/octet-stream"


@dataclass(frozen=True, slots=True)
class FileRoute:
    """What a URL path names inside the build directory, worked out from the name alone: the file, the
    directories on the way (checked on every request), the node owning it (None: provisioner only),
    whether it is public, and its Content-Type and Cache-Control header values."""

    path: str
    directories: tuple[str, ...]
    node: str | None
    public: bool
    content_type: bytes
    cache_control: bytes


class Site:
    """The server's state: configuration, secret, file cache and the on-demand machinery."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.root = os.path.realpath(config.out_dir)
        self.verifier = None if config.insecure else auth.Verifier(
            auth.load_secret(os.path.join(config.out_dir, "state")))
        self.files = FileCache(config.cache_bytes)
        self.routes: dict[str, FileRoute] = {}
        workspace = Workspace(config.workspace or config.out_dir, blob_url=config.blob_url)
        self.designs = Designs(config.design_roots, os.path.join(workspace.directory, "cache"),
                               config.max_design_bytes, config.fetch_timeout)
        self.join_scripts = JoinScripts(workspace)
        self.building: dict[str, asyncio.Future] = {}

    def authorize(self, token: str | None, node: str | None) -> None:
        """Check a request's token for a resource of ``node`` (None: provisioner only)."""
        if self.verifier is None:
            return
        try:
            self.verifier.authorize(token, node)
        except auth.AuthError as exc:
            raise ApiError(exc.status, str(exc), error_type="Unauthenticated" if exc.status == 401
                           else "Forbidden") from None

    def resolve(self, relpath: str) -> FileRoute:
        """The file a URL path names inside the build directory; 404 for anything not servable.

        The name's route comes from :attr:`routes` when :meth:`remember` kept it; its directories are
        checked every time (and the file itself by :meth:`FileCache.get`).
        """
        route = self.routes.get(relpath) or _route(self.root, relpath)
        path = self.root
        for part in route.directories:  # the build writes no symlinks: refusing them keeps every path inside
            path = os.path.join(path, part)
            try:
                if not stat.S_ISDIR(os.lstat(path).st_mode):
                    raise ApiError(404, "not found", error_type="NotFound")
            except OSError:
                raise ApiError(404, "not found", error_type="NotFound") from None
        return route

    def remember(self, relpath: str, route: FileRoute) -> None:
        """Keep the route of a file that was found: bounded by the build's files, not by what clients ask."""
        if relpath not in self.routes:
            if len(self.routes) >= ROUTE_CAPACITY:
                self.routes.clear()
            self.routes[relpath] = route

    def servable(self) -> list[tuple[str, str]]:
        """Every file the server hands out (those :meth:`resolve` accepts): sorted (relative path, path)."""
        found = []
        for directory, dirs, files in os.walk(self.root):
            rel = os.path.relpath(directory, self.root)
            for name in files:
                relpath = name if rel == "." else f"{rel}/{name}"
                try:
                    found.append((relpath, self.resolve(relpath).path))
                except ApiError:
                    continue
            dirs[:] = [d for d in dirs if not d.startswith(".") and not (rel == "." and d in PRIVATE_DIRS)]
        return sorted(found)

    async def build_once(self, key: str, build):
        """Run the blocking ``build`` in a thread; concurrent requests for ``key`` share one run."""
        future = self.building.get(key)
        if future is None:
            future = asyncio.ensure_future(run_in_threadpool(build))
            self.building[key] = future
            future.add_done_callback(lambda _done: self.building.pop(key, None))
        return await asyncio.shield(future)


def _route(root: str, relpath: str) -> FileRoute:
    """The :class:`FileRoute` of a URL path below ``root``; 404 for hidden, private or malformed names."""
    parts = relpath.split("/")
    hidden = any(not part or part.startswith(".") or "\\" in part or "\0" in part for part in parts)
    if hidden or parts[0] in PRIVATE_DIRS or relpath in PRIVATE_FILES:
        raise ApiError(404, "not found", error_type="NotFound")
    public = parts[0] in PUBLIC_DIRS
    match = None if public else NODE_SCRIPT.match(relpath)
    return FileRoute(os.path.join(root, relpath), tuple(parts[:-1]), match["node"] if match else None, public,
                     content_type(relpath).encode("latin-1"), PUBLIC_CACHE if public else PRIVATE_CACHE)


def file_parts(method: str, if_none_match: str | None, entry: FileEntry, media_type: bytes,
               cache_control: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """200 with the bytes (none for HEAD), or 304 when If-None-Match matches the ETag."""
    if if_none_match and (if_none_match.strip() == "*" or entry.etag in [
            tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]):
        return 304, [(b"etag", entry.etag_value), (b"cache-control", cache_control)], b""
    return 200, [(b"etag", entry.etag_value), (b"cache-control", cache_control), (b"content-type", media_type),
                 (b"content-length", entry.length_value)], b"" if method == "HEAD" else entry.body


def parts_response(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> Response:
    """The Starlette response of an answer's parts."""
    return Response(body, status_code=status,
                    headers={key.decode("latin-1"): value.decode("latin-1") for key, value in headers})


def file_response(request: Request, entry: FileEntry, media_type: bytes, cache_control: bytes) -> Response:
    return parts_response(*file_parts(request.method, request.headers.get("if-none-match"), entry, media_type,
                                      cache_control))


async def static_file(site: Site, scope, headers: dict[str, str]) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """GET/HEAD a file of the build directory (plain ASGI: this is the hot path).

    ``headers`` holds the request headers a file answer reads (:func:`_checked_headers`).
    """
    if scope["method"] not in ("GET", "HEAD"):
        raise ApiError(405, "Method Not Allowed", error_type="HTTPError", headers={"allow": "GET, HEAD"})
    query = scope["query_string"]
    single = check_params(parse_qsl(query.decode("latin-1"), keep_blank_values=True), {"token"}) if query else {}
    relpath = scope["path"][1:]
    route = site.resolve(relpath)
    if not route.public:
        scope["state"]["node"] = route.node or "-"
        site.authorize(credential(headers, single), route.node)
    entry = await site.files.get(route.path)
    if entry is None:
        raise ApiError(404, "not found", error_type="NotFound")
    site.remember(relpath, route)
    return file_parts(scope["method"], headers.get("if-none-match"), entry, route.content_type, route.cache_control)


async def sha256sums(request: Request) -> Response:
    """``sha256sum``-style listing of every servable file."""
    site: Site = request.app.state.site
    check_params(request.query_params.multi_items(), set())
    lines = []
    for relpath, path in site.servable():
        entry = await site.files.get(path)
        if entry is not None:
            lines.append(f"{entry.sha256}  {relpath}\n")
    body = "".join(lines).encode()
    return file_response(request, FileEntry((), body), b"text/plain; charset=utf-8", b"no-cache")


async def versions(request: Request) -> Response:
    check_params(request.query_params.multi_items(), set())
    return JSONResponse({"v1.0": {"path": API, "status": "stable"}})


async def health(request: Request) -> Response:
    check_params(request.query_params.multi_items(), set())
    return Response(status_code=204)


async def fetch_design(site: Site, ref: str):
    try:
        return await site.designs.fetch(ref)
    except DesignError as exc:
        raise ApiError(400, str(exc), error_type="InvalidDesignReference") from None
    except PromenadeError as exc:
        raise ApiError(400, "design_ref cannot be read", [str(p) for p in exc.problems],
                       error_type="InvalidDesignReference") from None


async def join_scripts(request: Request) -> Response:
    """The original join-scripts API: a join script built on demand for the node described by the query."""
    site: Site = request.app.state.site
    single = check_params(request.query_params.multi_items(), JOIN_PARAMS, REPEATABLE)
    missing = [key for key in ("design_ref", "hostname", "ip") if key not in single]
    if missing:
        raise ApiError(400, f"missing required parameter(s): {', '.join(missing)}", error_type="InvalidFormatError")
    request.state.node = single["hostname"]
    site.authorize(credential(request.headers, single), single["hostname"])
    try:
        node = NodeRequest.parse(single, request.query_params.getlist("labels.static"),
                                 request.query_params.getlist("labels.dynamic"))
    except ValueError as exc:
        raise ApiError(400, str(exc), error_type="InvalidFormatError") from None
    design = await fetch_design(site, single["design_ref"])
    path = site.join_scripts.path(design, node)
    try:
        await site.build_once(path, lambda: site.join_scripts.build(design, node))
    except PromenadeError as exc:
        raise ApiError(400, "the design cannot be rendered for this node", [str(p) for p in exc.problems],
                       error_type="DeckhandException") from None
    entry = await site.files.get(path)
    return file_response(request, entry, b"text/x-shellscript", PRIVATE_CACHE)


async def validate_design(request: Request) -> Response:
    """The original validatedesign API: render and validate the design at ``href``."""
    site: Site = request.app.state.site
    site.authorize(credential(request.headers, check_params(request.query_params.multi_items(), {"token"})), None)
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise ApiError(415, "Content-Type must be application/json", error_type="InvalidFormatError")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise ApiError(413, f"request body is larger than {MAX_BODY} bytes", error_type="InvalidFormatError")
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "JSON could not be decoded", error_type="InvalidFormatError") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("href"), str) or not payload["href"]:
        raise ApiError(400, "Missing input: href", error_type="InvalidFormatError")
    try:
        design = await site.designs.fetch(payload["href"])
        await run_in_threadpool(render_design, design)
        problems = []
    except DesignError as exc:
        problems = [Problem(str(exc))]
    except PromenadeError as exc:
        problems = exc.problems
    return JSONResponse(validation_json(problems), status_code=400 if problems else 200)


async def handle_api_error(request: Request, exc: ApiError) -> Response:
    return error_response(exc)


async def handle_http_exception(request: Request, exc: HTTPException) -> Response:
    return error_response(ApiError(exc.status_code, exc.detail, error_type="HTTPError", headers=exc.headers))


def unexpected(exc: Exception) -> ApiError:
    return ApiError(500, "internal server error", error_type=type(exc).__name__, retry=True)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    logging.getLogger("promenade.server").exception("unhandled error on %s", request.url.path)
    return error_response(unexpected(exc))


class AccessLog:
    """JSON lines written once per event-loop iteration: one write for all requests finished in it.

    Lines go straight to ``stream`` (stderr): the logging module costs more than a file request.
    """

    def __init__(self, stream):
        self.stream = stream
        self.pending: list[str] = []
        self.second = None
        self.stamp = ""

    def add(self, scope, status: int, size: int, seconds: float) -> None:
        """Record one request: time, client, method, path (never the query), node, status, bytes, duration."""
        if not self.pending:
            asyncio.get_running_loop().call_soon(self.flush)
        second = int(time.time())
        if second != self.second:
            self.second, self.stamp = second, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))
        client = (scope.get("client") or ("-",))[0]
        self.pending.append(
            f'{{"time":"{self.stamp}","client":{_json_string(client)},"method":{_json_string(scope["method"])},'
            f'"path":{_json_string(scope["path"])},"node":{_json_string(scope["state"].get("node", "-"))},'
            f'"status":{status},"bytes":{size},"duration_ms":{seconds * 1000:.3f}}}')

    def flush(self) -> None:
        lines, self.pending = self.pending, []
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()


class Guard:
    """The ASGI entry point: rejects oversized requests, serves files directly and the API through
    Starlette, and writes one JSON access-log line per request.

    Files skip Starlette's routing and middleware: they are nearly all the traffic.
    """

    def __init__(self, api, site: Site, stream=None):
        self.api = api
        self.site = site
        self.log = AccessLog(stream or sys.stderr)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.api(scope, receive, send)
        started = time.perf_counter()
        scope.setdefault("state", {})
        outcome = [500, 0]  # status, body bytes: what the access log records
        try:
            parts = await self.direct_answer(scope)
            if parts is None:
                await self.api(scope, receive, _tracking(send, outcome))
            else:
                status, headers, body = parts
                outcome[0], outcome[1] = status, len(body)
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
        finally:
            self.log.add(scope, outcome[0], outcome[1], time.perf_counter() - started)

    async def direct_answer(self, scope) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        """The answer to a file request or to a request over the limits; None for the API."""
        try:
            headers = _checked_headers(scope)
            if scope["path"].startswith(API_PREFIXES):
                return None
            return await static_file(self.site, scope, headers)
        except ApiError as error:
            return error_parts(error)
        except Exception as exc:  # the API's own errors are answered by Starlette
            logging.getLogger("promenade.server").exception("unhandled error on %s", scope["path"])
            return error_parts(unexpected(exc))


def _tracking(send, outcome: list):
    """``send`` that also records the response's status and body bytes in ``outcome``."""

    async def tracking_send(message):
        if message["type"] == "http.response.start":
            outcome[0] = message["status"]
        elif message["type"] == "http.response.body":
            outcome[1] += len(message.get("body", b""))
        await send(message)

    return tracking_send


def _checked_headers(scope) -> dict[str, str]:
    """The request headers a file answer reads (:data:`FILE_HEADERS`, by lower-case name), after refusing
    request targets, headers and declared bodies over the limits."""
    if len(scope["raw_path"]) + len(scope["query_string"]) > MAX_TARGET:
        raise ApiError(414, f"request target is longer than {MAX_TARGET} bytes", error_type="InvalidFormatError")
    size, length, wanted = 0, b"0", {}
    for name, value in scope["headers"]:
        size += len(name) + len(value)
        if name in FILE_HEADERS:
            wanted[name.decode("latin-1")] = value.decode("latin-1")
        elif name == b"content-length":
            length = value
    if size > MAX_HEADERS:
        raise ApiError(431, f"request headers are larger than {MAX_HEADERS} bytes", error_type="InvalidFormatError")
    if not length.isdigit():
        raise ApiError(400, "invalid Content-Length", error_type="InvalidFormatError")
    if int(length) > MAX_BODY:
        raise ApiError(413, f"request body is larger than {MAX_BODY} bytes", error_type="InvalidFormatError")
    return wanted


class HeadWithBody:
    """A transport holding each write until the next one or the end of the event-loop iteration, so
    that a response's head leaves together with its body: one send, and one wake-up of the client,
    per response instead of two. Everything else is the wrapped transport's."""

    __slots__ = ("transport", "loop", "held")

    def __init__(self, transport, loop):
        self.transport, self.loop, self.held = transport, loop, None

    def __getattr__(self, name):
        return getattr(self.transport, name)

    def write(self, data) -> None:
        if self.held is None:
            if data:
                self.held = data
                self.loop.call_soon(self.flush)
        else:
            held, self.held = self.held, None
            self.transport.writelines((held, data))

    def flush(self) -> None:
        held, self.held = self.held, None
        if held is not None and not self.transport.is_closing():
            self.transport.write(held)

    def writelines(self, chunks) -> None:
        self.flush()
        self.transport.writelines(chunks)

    def write_eof(self) -> None:
        self.flush()
        self.transport.write_eof()

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def abort(self) -> None:
        self.held = None
        self.transport.abort()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def get_write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size() + len(self.held or b"")


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a :class:`HeadWithBody` transport."""

    def connection_made(self, transport) -> None:
        super().connection_made(HeadWithBody(transport, self.loop))


def create_app(config: ServeConfig) -> Starlette:
    """The ASGI application serving ``config.out_dir``."""
    site = Site(config)

    @asynccontextmanager
    async def lifespan(app):
        yield
        await site.designs.close()

    app = Starlette(
        routes=[
            Route("/versions", versions, methods=["GET"]),
            Route(f"{API}/health", health, methods=["GET"]),
            Route(f"{API}/join-scripts", join_scripts, methods=["GET"]),
            Route(f"{API}/validatedesign", validate_design, methods=["POST"]),
            Route("/sha256sums", sha256sums, methods=["GET", "HEAD"]),
        ],
        exception_handlers={ApiError: handle_api_error, HTTPException: handle_http_exception,
                            Exception: handle_unexpected},
        lifespan=lifespan,
    )
    app.state.site = site
    return Guard(app, site)


def app_from_environment():
    """uvicorn factory: the application for the configuration in ``$PROMENADE_SERVE_CONFIG``."""
    return create_app(ServeConfig.from_json(os.environ[CONFIG_ENV]))


def serve(config: ServeConfig, host: str = "127.0.0.1", port: int = 9000, *, tls_cert: str | None = None,
          tls_key: str | None = None, workers: int = 1) -> None:
    """Run the server until SIGINT/SIGTERM, then finish the requests in flight and stop."""
    problems = []
    if not os.path.isdir(config.out_dir):
        problems.append(Problem(f"build directory {config.out_dir!r} does not exist: run `doit build` first",
                                file=config.out_dir))
    if bool(tls_cert) != bool(tls_key):
        problems.append(Problem("TLS needs both tls_cert and tls_key"))
    problems += [Problem("TLS file does not exist", file=path) for path in (tls_cert, tls_key)
                 if path and not os.path.isfile(path)]
    if problems:
        raise PromenadeError(problems)
    if not config.insecure:
        auth.load_secret(os.path.join(config.out_dir, "state"))
    os.environ[CONFIG_ENV] = config.to_json()
    scheme = "https" if tls_cert else "http"
    print(f"promenade: serving {config.out_dir}/ on {scheme}://{host}:{port} ({workers} worker"
          f"{'s' if workers != 1 else ''}, {'NO credentials (insecure)' if config.insecure else 'tokens required'})",
          file=sys.stderr, flush=True)
    uvicorn.run("promenade.server:app_from_environment", factory=True, host=host, port=port, workers=workers,
                http="promenade.server:HttpProtocol", loop="uvloop", ssl_certfile=tls_cert or None,
                ssl_keyfile=tls_key or None, access_log=False, server_header=False, timeout_graceful_shutdown=30,
                log_level="warning")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The server's command-line options (shared by ``promenade serve`` and ``doit serve``)."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9000, help="port to listen on (default 9000)")
    parser.add_argument("--out", default="build", help="build directory to serve (default build/)")
    parser.add_argument("--design-root", action="append", default=[], metavar="DIR",
                        help="directory local design_ref paths may name (repeatable)")
    parser.add_argument("--workspace", metavar="DIR",
                        help="writable directory for downloads and on-demand caches (default: the build directory)")
    parser.add_argument("--blob-url", help="shared-payload URL the build used (doit build blob_url=...)")
    parser.add_argument("--tls-cert", help="PEM certificate (chain) file: serve HTTPS")
    parser.add_argument("--tls-key", help="PEM private key file for --tls-cert")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--insecure", nargs="?", const="true", default="false", type=flag,
                        help="serve scripts without credentials (labs only)")


def run(args: argparse.Namespace) -> None:
    """Serve with parsed :func:`add_arguments` options."""
    # uvicorn re-raises SIGTERM once its graceful shutdown is done: exit 0 then, not "killed".
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(0))
    config = ServeConfig(out_dir=args.out, design_roots=args.design_root, insecure=args.insecure,
                         workspace=args.workspace, blob_url=args.blob_url)
    serve(config, args.host, args.port, tls_cert=args.tls_cert, tls_key=args.tls_key, workers=args.workers)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="promenade-serve", description=__doc__.splitlines()[0])
    add_arguments(parser)
    try:
        run(parser.parse_args(argv))
    except PromenadeError as exc:
        sys.exit(exc.report())


if __name__ == "__main__":
    main()
