"""Credentials for downloading scripts: per-node bearer tokens derived from one build secret.

A random secret is generated once at ``<out>/state/serve-secret`` (0600). Every token is
``<kind>:<name>:<HMAC-SHA256(secret, "<kind>:<name>")>``: ``node:<node name>`` may fetch only
that node's scripts, ``provisioner:`` (Drydock, operators) may fetch everything. Tokens are
derived, not stored, so any replica holding the secret verifies them without shared state, and
deleting the secret revokes every token at once.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from typing import NamedTuple

from .errors import Problem, PromenadeError
from .fileio import SECRET_MODE, atomic_write

SECRET_FILE = "serve-secret"
TOKENS_FILE = "tokens.yaml"
NODE = "node"
PROVISIONER = "provisioner"


class Identity(NamedTuple):
    """Who a valid token speaks for (a named tuple: cheap to define for every doit run)."""

    kind: str
    name: str = ""

    def may_access(self, node: str | None) -> bool:
        """Whether this identity may read a resource owned by ``node`` (None: provisioner only)."""
        return self.kind == PROVISIONER or (node is not None and self.name == node)

    def __str__(self) -> str:
        return self.name if self.kind == NODE else PROVISIONER


class AuthError(Exception):
    """A request without valid credentials (401) or for another node's resource (403)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def secret_path(state_dir: str) -> str:
    return os.path.join(state_dir, SECRET_FILE)


def ensure_secret(state_dir: str) -> bytes:
    """The build's serving secret, created (0600) on first use."""
    path = secret_path(state_dir)
    if not os.path.exists(path):
        atomic_write(path, secrets.token_hex(32) + "\n", SECRET_MODE)
    return load_secret(state_dir)


def load_secret(state_dir: str) -> bytes:
    """Read the serving secret; a missing or empty file is a user mistake."""
    path = secret_path(state_dir)
    try:
        with open(path, "rb") as handle:
            secret = handle.read().strip()
    except FileNotFoundError:
        raise PromenadeError(Problem("no serving secret: run `doit tokens` first, or serve with insecure=true",
                                     file=path)) from None
    if len(secret) < 32:
        raise PromenadeError(Problem("serving secret is shorter than 32 characters", file=path))
    return secret


def _mac(secret: bytes, kind: str, name: str) -> str:
    return hmac.new(secret, f"{kind}:{name}".encode(), hashlib.sha256).hexdigest()


def issue_token(secret: bytes, identity: Identity) -> str:
    return f"{identity.kind}:{identity.name}:{_mac(secret, identity.kind, identity.name)}"


def verify_token(secret: bytes, token: str) -> Identity:
    """The identity a token speaks for; :class:`AuthError` 401 if it is not genuine."""
    kind, _, rest = token.partition(":")
    name, _, mac = rest.rpartition(":")
    if kind not in (NODE, PROVISIONER) or (kind == NODE) != bool(name):
        raise AuthError(401, "malformed credentials")
    if not hmac.compare_digest(mac.encode(), _mac(secret, kind, name).encode()):
        raise AuthError(401, "invalid credentials")
    return Identity(kind, name)


class Verifier:
    """Checks tokens against one secret, remembering the genuine ones (an HMAC costs more than
    serving a cached file). Forged tokens are never remembered, so they cannot fill the memory."""

    def __init__(self, secret: bytes, capacity: int = 65536):
        self.secret = secret
        self.capacity = capacity
        self.known: dict[str, Identity] = {}

    def authorize(self, token: str | None, node: str | None) -> Identity:
        """Check ``token`` for a resource owned by ``node``: 401 without a genuine token, 403 for another node's."""
        if not token:
            raise AuthError(401, "credentials required: Authorization: Bearer <token> or ?token=<token>")
        identity = self.known.get(token)
        if identity is None:
            identity = verify_token(self.secret, token)
            if len(self.known) >= self.capacity:
                self.known.clear()
            self.known[token] = identity
        if not identity.may_access(node):
            raise AuthError(403, f"token of {identity} may not access this resource")
        return identity


def tokens_document(secret: bytes, nodes: list[str]) -> dict:
    """The contents of ``tokens.yaml``: the provisioner token and one token per node."""
    return {
        PROVISIONER: issue_token(secret, Identity(PROVISIONER)),
        "nodes": {name: issue_token(secret, Identity(NODE, name)) for name in sorted(nodes)},
    }


def write_tokens(out_dir: str, state_dir: str, nodes: list[str]) -> str:
    """Write ``<out>/tokens.yaml`` (0600) for ``nodes``, creating the secret if needed."""
    from .yamlio import dump_yaml  # on use: the server and every doit run import this module

    path = os.path.join(out_dir, TOKENS_FILE)
    atomic_write(path, dump_yaml(tokens_document(ensure_secret(state_dir), nodes)), SECRET_MODE)
    return path
