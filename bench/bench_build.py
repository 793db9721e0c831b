"""Benchmark ``doit build``: full builds, the no-op rebuild, a one-node relabel, 50 MiB payloads.

Sites come from ``bench/sitegen.py`` (the embedded site plus N workers, ECDSA keys). Before
each timed full build, ``doit certs`` fills a new output directory (not timed: the original's
``build-all`` takes certificates as input); the timed ``doit build`` renders the site and its
certificates and builds every script. Each figure is the median wall time of ``--runs`` whole
``doit`` processes, with their CPU time.

* ``full N``: ``doit build`` from an output directory holding only the certificates (N = 10,
  200, 1000; tiny payload).
* ``noop``: ``doit build`` again at N = 1000, paired run by run with a floor: a Python process
  that stats every input (site files, build state) and every output; and with doit's own cost,
  a dodo holding one up-to-date task.
* ``relabel``: N = 50 (and 1000), one worker's labels change between runs; at N = 50 paired with
  doit running one up-to-date task after importing PyYAML and Jinja2, which any relabel needs.
* ``50MiB N``: N = 10 / 50 with two 50 MiB HostSystem files (seeded base64 text, as in the
  original's measurements) served from a loopback HTTP server; full build, then the same in
  by-reference mode (join scripts fetch the shared payload instead of embedding it).

Usage: ``.venv/bin/python bench/bench_build.py [--runs 3] [--only full,noop,relabel,50mib]``.
Every doit run has a timeout, and the whole benchmark stops after ``--budget`` seconds.

Sites and outputs go below ``build/`` of this checkout (``--dir``), on the filesystem where
``doit build`` writes by default: a build creates a file per script, and creating a file can
cost very different amounts on different filesystems (seen on one machine: 1.1 ms in any
directory below ``/tmp``, 0.02 ms elsewhere on the same ext4 volume, which made a full build at
N = 200 a quarter slower).
"""

from __future__ import annotations

import argparse
import base64
import http.server
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from sitegen import generate_site  # noqa: E402

# Measure what operators run: Python's default of caching compiled modules (__pycache__), even
# where the environment turns it off for development.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

DOIT = [os.path.join(REPO, ".venv", "bin", "python"), "-m", "doit", "-f", os.path.join(REPO, "dodo.py")]
TIMEOUT = 1800
BIG = 50 * 1024 * 1024
FLOOR = """
import os, sys
n = 0
for root in sys.argv[1:]:
    for directory, dirs, files in os.walk(root):
        for name in files:
            os.stat(os.path.join(directory, name))
            n += 1
"""


class Budget:
    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds

    def check(self) -> None:
        if time.monotonic() > self.deadline:
            raise SystemExit("benchmark budget exhausted; rerun with fewer --runs or a bigger --budget")


CPU: list[float] = []  # CPU seconds (user + system) of every timed doit process, in order


def doit(*args: str, site: str, out: str, timed: bool = True) -> float:
    """Run one doit command; return its wall time (a timed run's CPU time is appended to ``CPU``)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(DOIT + list(args) + [f"site={site}", f"out={out}"], cwd=REPO, capture_output=True,
                          text=True, timeout=TIMEOUT)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if timed:
        CPU.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"doit {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return elapsed


def prepare(n: int, root: str, labels: dict | None = None) -> str:
    """A synthetic site with N workers; its PKICatalog uses ECDSA keys (certificates are not measured)."""
    site = generate_site(n, os.path.join(root, "site"), labels)
    catalog = os.path.join(site, "site", "pki-catalog.yaml")
    with open(catalog, encoding="utf-8") as handle:
        text = handle.read()
    with open(catalog, "w", encoding="utf-8") as handle:
        handle.write(text.replace("\ndata:\n", "\ndata:\n  key_algorithm: ecdsa-p256\n", 1))
    return site


def certified_output(site: str, out: str) -> None:
    """An output directory holding only the site's certificates (``doit certs``, not timed).

    The original's build-all takes certificates as input too. ``doit certs`` never renders the
    site with its certificates, so the timed build still renders it once, as build-all does.
    """
    doit("certs", site=site, out=out, timed=False)


def full_build(site: str, root: str, runs: int, budget: Budget, *extra: str) -> tuple[list[float], str]:
    """Wall times of ``doit build [extra]`` from new output directories holding only certificates.

    Returns the times and the last output directory (kept; the others are deleted).
    """
    times, out = [], ""
    for run in range(runs):
        budget.check()
        if out:
            shutil.rmtree(out)
        out = tempfile.mkdtemp(prefix="out-", dir=root)
        certified_output(site, out)
        times.append(doit("build", *extra, site=site, out=out))
    return times, out


def report(label: str, times: list[float], extra: str = "") -> None:
    """One result line: median wall time (min, max) and the median CPU time of the same runs."""
    cpu = statistics.median(CPU[-len(times):]) if len(CPU) >= len(times) else float("nan")
    print(f"{label:<24} median {statistics.median(times):8.3f} s wall, {cpu:7.3f} s CPU  "
          f"(min {min(times):.3f}, max {max(times):.3f}, runs {len(times)}){extra}", flush=True)


def bench_full(root: str, runs: int, budget: Budget) -> None:
    for n in (10, 200, 1000):
        base = os.path.join(root, f"full-{n}")
        site = prepare(n, base)
        times, out = full_build(site, base, runs, budget)
        report(f"full build N={n}", times)
        if n == 1000:
            bench_noop(site, out, runs, budget)
        shutil.rmtree(base)


ONE_TASK_DODO = """{imports}
DOIT_CONFIG = {{"backend": "sqlite3", "dep_file": ".doit.db", "verbosity": 0}}


def task_one():
    return {{"actions": ["true"], "file_dep": [__file__]}}
"""


def one_task_doit(parent: str, imports: str = "") -> list[str]:
    """The command of a doit run whose dodo (below ``parent``) holds one up-to-date task and
    imports ``imports`` (Python statements): interpreter, doit, its database and those libraries,
    nothing of Promenade. Run once here, so that the task is up to date."""
    scratch = tempfile.mkdtemp(prefix="one-task-", dir=parent)
    with open(os.path.join(scratch, "dodo.py"), "w", encoding="utf-8") as handle:
        handle.write(ONE_TASK_DODO.format(imports=imports))
    command = [DOIT[0], "-m", "doit", "-f", os.path.join(scratch, "dodo.py")]
    subprocess.run(command, cwd=scratch, check=True, capture_output=True, timeout=TIMEOUT)
    return command


def wall_time(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=os.path.dirname(command[-1]), check=True, capture_output=True, timeout=TIMEOUT)
    return time.perf_counter() - started


def bench_noop(site: str, out: str, runs: int, budget: Budget) -> None:
    """The no-op next to two floors, run by run: the stat loop, and doit itself (a dodo with one
    up-to-date task)."""
    floor_command = [DOIT[0], "-c", FLOOR, site, out]
    one_task = one_task_doit(os.path.dirname(out))
    noop, floor, bare = [], [], []
    for _ in range(runs):
        budget.check()
        noop.append(doit("build", site=site, out=out))
        floor.append(wall_time(floor_command))
        bare.append(wall_time(one_task))
    ratios = [a / b for a, b in zip(noop, floor)]
    report("no-op N=1000", noop, f"  floor median {statistics.median(floor):.3f} s, "
                                 f"ratio median {statistics.median(ratios):.1f}x; one-task doit median "
                                 f"{statistics.median(bare):.3f} s")


def bench_relabel(root: str, runs: int, budget: Budget) -> None:
    """At N = 50 each relabel is paired with what any relabel must at least do: start doit (one
    up-to-date task) having imported PyYAML (to parse the changed document) and Jinja2 (to render
    the node's templates)."""
    for n in (50, 1000):
        base = os.path.join(root, f"relabel-{n}")
        site = prepare(n, base)
        out = os.path.join(base, "out")
        certified_output(site, out)
        doit("build", site=site, out=out, timed=False)
        libraries = one_task_doit(base, "import yaml, jinja2") if n == 50 else None
        times, floor = [], []
        for run in range(runs):
            budget.check()
            prepare(n, base, labels={7: ("node-type=worker", f"relabel={run}")})
            times.append(doit("build", site=site, out=out))
            if libraries:
                floor.append(wall_time(libraries))
        report(f"relabel N={n}", times, f"  doit with one task, PyYAML and Jinja2 loaded: median "
                                        f"{statistics.median(floor):.3f} s" if floor else "")
        shutil.rmtree(base)


class Files(http.server.BaseHTTPRequestHandler):
    """Serves the two big files from memory."""

    blobs: dict[str, bytes] = {}

    def do_GET(self):  # noqa: N802 (http.server API)
        body = self.blobs.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def big_text(seed: int) -> bytes:
    """50 MiB of seeded pseudo-random base64 text, 76 characters a line."""
    rng = random.Random(seed)
    return base64.encodebytes(rng.randbytes(BIG * 3 // 4 + 100))[:BIG]


def bench_big(root: str, runs: int, budget: Budget) -> None:
    Files.blobs = {"/kubelet": big_text(1), "/kubectl": big_text(2)}
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Files)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    entries = "".join(
        f"    - path: /usr/local/bin/{name}\n      mode: 0555\n      url: {url}/{name}\n" for name in ("kubelet", "kubectl"))
    try:
        for n in (10, 50):
            base = os.path.join(root, f"big-{n}")
            site = prepare(n, base)
            host_system = os.path.join(site, "site", "host-system.yaml")
            with open(host_system, encoding="utf-8") as handle:
                text = handle.read()
            with open(host_system, "w", encoding="utf-8") as handle:
                handle.write(text.replace("\ndata:\n", "\ndata:\n  files:\n" + entries, 1))
            count = runs if n == 10 else max(1, runs // 2)
            report(f"50MiB full build N={n}", full_build(site, base, count, budget)[0])
            report(f"50MiB by-reference N={n}", full_build(site, base, count, budget, f"blob_url={url}/blobs")[0])
            shutil.rmtree(base)
    finally:
        httpd.shutdown()
        httpd.server_close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default="full,relabel,50mib", help="comma-separated: full (with noop), relabel, 50mib")
    parser.add_argument("--budget", type=float, default=3600, help="stop after this many seconds")
    parser.add_argument("--dir", default=os.path.join(REPO, "build"),
                        help="where the scratch directory goes (default: build/ of this checkout, where "
                             "`doit build` writes; see the module docstring)")
    args = parser.parse_args()
    budget = Budget(args.budget)
    os.makedirs(args.dir, mode=0o700, exist_ok=True)
    root = tempfile.mkdtemp(prefix=".bench-", dir=args.dir)  # a dot directory: `doit serve` never serves it
    wanted = set(args.only.split(","))
    try:
        if "full" in wanted:
            bench_full(root, args.runs, budget)
        if "relabel" in wanted:
            bench_relabel(root, args.runs, budget)
        if "50mib" in wanted:
            bench_big(root, args.runs, budget)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
