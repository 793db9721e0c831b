"""Task family: ``tokens`` (download credentials) and ``serve`` (the HTTP server for Drydock).

``doit tokens`` writes ``<out>/tokens.yaml`` (0600): the provisioner token and one token per
KubernetesNode of the rendered site. ``doit serve host= port= site= out= tls_cert= tls_key=
insecure= workers= designs= blob_url=`` serves ``<out>/`` and the original join-scripts API;
``designs=`` lists extra directories (comma-separated) that local design_refs may name.
"""

from __future__ import annotations

import os
import sys

from doit import get_var

from .. import auth, store
from ..config import NODE
from .options import out_dir, site_dir, state_dir
from .reporting import user_errors
from .render import SITE_STORE


@user_errors
def _write_tokens(site_store: str) -> None:
    nodes = [entry["name"] for entry in store.read_index(site_store) if entry["schema"] == NODE]
    path = auth.write_tokens(out_dir(), state_dir(), nodes)
    print(f"{path}: provisioner token and {len(nodes)} node token{'s' if len(nodes) != 1 else ''} (0600)")


def tokens_task() -> dict:
    """``tokens``."""
    site_store = state_dir(*SITE_STORE)
    return {
        "actions": [(_write_tokens, [site_store])],
        "file_dep": [store.index_path(site_store)],
        "targets": [os.path.join(out_dir(), auth.TOKENS_FILE), auth.secret_path(state_dir())],
        "verbosity": 2,
    }


def _serve(argv: list[str]) -> None:
    """Replace this doit process by the server: the build directory's lock is released on exec,
    so ``doit build`` can run while serving, and SIGTERM reaches the server directly."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "promenade.server", *argv])


def serve_task() -> dict:
    """``serve``: execs the server with the command line's options."""
    argv = ["--host", get_var("host", "127.0.0.1"), "--port", get_var("port", "9000"), "--out", out_dir(),
            "--workers", get_var("workers", "1"), "--insecure", get_var("insecure", "false")]
    for root in [site_dir()] + [path for path in get_var("designs", "").split(",") if path]:
        argv += ["--design-root", root]
    for option in ("tls_cert", "tls_key", "blob_url"):
        if get_var(option, ""):
            argv += ["--" + option.replace("_", "-"), get_var(option, "")]
    return {
        "actions": [(_serve, [argv])],
        "task_dep": ["tokens"],
        "uptodate": [False],
        "verbosity": 2,
    }
