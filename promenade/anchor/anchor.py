#!/usr/bin/env python3
"""Anchor: keep a component's static pod manifest and files in place on a host.

Shipped inside the charts and run by each chart's anchor DaemonSet (Python 3 stdlib only).
The chart's values (``values.json``, the chart values rendered as JSON) list the files to
place under ``anchor.files``, in order (manifests last, so kubelet never sees a pod whose
files are missing)::

    anchor:
      files:
        - {path: "${values.scheduler.host_etc_path}/pki/ca.pem", value: values.secrets.tls.ca, mode: "0600"}
        - {path: /etc/kubernetes/manifests/kube-scheduler.yaml, template: kube-scheduler.yaml}

``value`` is a dotted path into the rendering context (``format: json`` writes a mapping
or list as JSON, which is also YAML); ``template`` names a file in the
templates directory whose ``${dotted.path}`` placeholders are filled from the context;
``path`` may hold placeholders too. The
context holds ``values`` (the chart values) and ``node`` (``--var node.KEY=VALUE`` from the
command line, merged with the entry of ``values.nodes`` whose ``name`` is ``node.name``).
A placeholder that resolves to nothing is an error: nothing is written.

Files are written atomically and only when their content changed (``fileio.py``, the same
module Promenade writes its own outputs with, ships next to this program; new directories are
created 0700); host paths are resolved under ``--root`` (the host filesystem mount in the pod,
``/host``).

Usage::

    anchor.py sync    --values V.json --templates DIR [--root /host] [--var node.name=n1 ...]
    anchor.py cleanup --values V.json [--root /host] [--var ...]
    anchor.py run     --values V.json --templates DIR [--root /host] [--var ...]
                      [--period 15] [--stop-file /tmp/stop] [--cleanup]

``run`` syncs every ``--period`` seconds until the stop file appears (the DaemonSet's
``preStop`` hook creates it) or SIGTERM arrives; with ``--cleanup`` it then removes the files.
Exit status: 0 done, 1 bad input (message on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fileio import atomic_write  # noqa: E402  (promenade/fileio.py, shipped next to this file)

PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_.\-]+)\}")
DEFAULT_MODE = "0644"


class AnchorError(Exception):
    """Bad input: a missing value, a placeholder that resolves to nothing, a bad spec."""


def log(message: str) -> None:
    """One timestamped line on stderr (never file contents: they may be secrets)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(f"{stamp} {os.path.basename(sys.argv[0]) or 'anchor'}: {message}", file=sys.stderr, flush=True)


def lookup(context: dict, dotted: str, scalar: bool = True):
    """The value at ``dotted`` (``a.b.0.c``) in ``context``; AnchorError if it is missing
    (or, with ``scalar``, not a scalar)."""
    value = context
    for part in dotted.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise AnchorError(f"no value at {dotted!r} (missing {part!r})")
    if value is None or (scalar and isinstance(value, (dict, list))):
        raise AnchorError(f"value at {dotted!r} is not a scalar")
    return value


def scalar_text(value) -> str:
    """How a scalar appears in a file: booleans as ``true``/``false``, others as ``str``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render(text: str, context: dict) -> str:
    """``text`` with every ``${dotted.path}`` replaced from ``context``."""
    return PLACEHOLDER.sub(lambda match: scalar_text(lookup(context, match.group(1))), text)


def parse_vars(pairs: list[str]) -> dict:
    """``["node.name=n1", "node.ip=10.0.0.1"]`` -> ``{"node": {"name": "n1", "ip": "10.0.0.1"}}``."""
    result: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise AnchorError(f"--var wants KEY=VALUE, got {pair!r}")
        *parents, leaf = key.split(".")
        target = result
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    return result


def build_context(values: dict, variables: dict) -> dict:
    """The rendering context: ``values``, the variables, and ``node`` merged with its entry in ``values.nodes``."""
    context = dict(variables)
    node = dict(variables.get("node", {}))
    for entry in values.get("nodes") or []:
        if isinstance(entry, dict) and entry.get("name") == node.get("name"):
            node = {**entry, **node}
    context["node"] = node
    context["values"] = values
    return context


def host_path(root: str, path: str) -> str:
    """``path`` (absolute on the host) as seen under ``root``."""
    if not os.path.isabs(path):
        raise AnchorError(f"host path {path!r} is not absolute")
    return os.path.join(root, path.lstrip("/"))


def file_specs(values: dict) -> list[dict]:
    """The checked ``anchor.files`` list of the chart values."""
    specs = (values.get("anchor") or {}).get("files") or []
    for index, spec in enumerate(specs):
        where = f"anchor.files.{index}"
        if not isinstance(spec, dict) or "path" not in spec:
            raise AnchorError(f"{where}: needs a 'path'")
        if ("value" in spec) == ("template" in spec):
            raise AnchorError(f"{where}: needs exactly one of 'value' and 'template'")
        if spec.get("format", "text") not in ("text", "json"):
            raise AnchorError(f"{where}: format must be 'text' or 'json'")
        if not re.fullmatch(r"0?[0-7]{3}", str(spec.get("mode", DEFAULT_MODE))):
            raise AnchorError(f"{where}: mode must be octal like '0600'")
    return specs


def content_for(spec: dict, context: dict, templates: str) -> bytes:
    """The bytes one file spec places."""
    if "value" in spec:
        if spec.get("format") == "json":
            return (json.dumps(lookup(context, spec["value"], scalar=False), indent=2, sort_keys=True) + "\n").encode()
        return scalar_text(lookup(context, spec["value"])).encode()
    with open(os.path.join(templates, spec["template"]), encoding="utf-8") as handle:
        return render(handle.read(), context).encode()


def render_files(values: dict, context: dict, templates: str) -> list[tuple[str, bytes, int]]:
    """Every file the anchor places: ``(host path, content, mode)``; nothing on disk is touched."""
    return [
        (render(spec["path"], context), content_for(spec, context, templates), int(str(spec.get("mode", DEFAULT_MODE)), 8))
        for spec in file_specs(values)
    ]


def sync(values: dict, context: dict, templates: str, root: str) -> list[str]:
    """Place every file whose content changed (fixing modes); return the host paths written."""
    planned = render_files(values, context, templates)  # render all first: no partial update
    written = []
    for path, data, mode in planned:
        if atomic_write(host_path(root, path), data, mode):
            written.append(path)
            log(f"updated {path}")
    return written


def remove_path(path: str) -> bool:
    """Delete a file or directory tree if present; True if something was removed."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
        return True
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def cleanup(values: dict, context: dict, root: str) -> list[str]:
    """Remove the placed files, manifests first (reverse order); return the host paths removed."""
    paths = [render(spec["path"], context) for spec in reversed(file_specs(values))]
    removed = [path for path in paths if remove_path(host_path(root, path))]
    for path in removed:
        log(f"removed {path}")
    return removed


class StopWatch:
    """Turns SIGTERM and a stop file into a flag a periodic loop polls."""

    def __init__(self, stop_file: str | None):
        self.stop_file = stop_file
        self.signalled = False
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        self.signalled = True

    def stopping(self) -> bool:
        return self.signalled or bool(self.stop_file and os.path.exists(self.stop_file))

    def sleep(self, seconds: float) -> None:
        """Sleep up to ``seconds``, waking early when asked to stop."""
        deadline = time.monotonic() + seconds
        while not self.stopping() and time.monotonic() < deadline:
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))


def load_json(path: str) -> dict:
    """A JSON object from ``path``."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        raise AnchorError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise AnchorError(f"{path}: expected a JSON object")
    return data


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every anchor program shares."""
    parser.add_argument("--values", help="chart values as JSON (anchor.files lists the files to place)")
    parser.add_argument("--templates", default=".", help="directory of manifest templates")
    parser.add_argument("--root", default="/", help="where the host filesystem is mounted")
    parser.add_argument("--var", action="append", default=[], help="context variable KEY=VALUE (repeatable)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Keep static pod manifests and their files in place.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("sync", "cleanup", "run"):
        sub = commands.add_parser(name)
        add_common_arguments(sub)
        if name == "run":
            sub.add_argument("--period", type=float, default=15.0)
            sub.add_argument("--stop-file")
            sub.add_argument("--cleanup", action="store_true", help="remove the files when stopping")
    args = parser.parse_args(argv)
    try:
        if not args.values:
            raise AnchorError("--values is required")
        values = load_json(args.values)
        context = build_context(values, parse_vars(args.var))
        if args.command == "cleanup":
            cleanup(values, context, args.root)
            return 0
        if args.command == "sync":
            sync(values, context, args.templates, args.root)
            return 0
        watch = StopWatch(args.stop_file)
        while not watch.stopping():
            sync(values, context, args.templates, args.root)
            watch.sleep(args.period)
        if args.cleanup:
            cleanup(values, context, args.root)
        return 0
    except AnchorError as exc:
        log(f"error: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
