"""Wall time of `doit certs` on synthetic sites, next to the bare key-generation floor.

    .venv/bin/python bench/bench_certs.py [N ...] [--algorithms rsa-2048 ecdsa-p256]

For each N (extra worker nodes, each with its kubelet certificate, see ``sitegen.py``) and key
algorithm, prints: the floor (generating as many bare private keys as the site has CAs,
certificates and key pairs, with ``cryptography``, in one Python loop in this process), a
fresh `doit certs` run sequentially and with ``-n 2`` (each in a new output directory, render
included), and the following no-op run, as wall and CPU seconds (CPU is steadier on a busy
machine). Target: sequential within 1.3x of the floor. Every doit run is bounded by a timeout.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

from sitegen import generate_site  # noqa: E402

# Measure what operators run: Python's default of caching compiled modules (__pycache__), even
# where the environment turns it off for development.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

from promenade import pki  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOIT = [sys.executable, "-m", "doit", "-f", os.path.join(REPO, "dodo.py")]
TIMEOUT = 900


def set_algorithm(site: str, algorithm: str) -> None:
    """Switch the synthetic site to ``algorithm`` (one catalog's option covers the whole site)."""
    path = os.path.join(site, "site", "pki-catalog.yaml")
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(re.sub(r"^data:\n", f"data:\n  key_algorithm: {algorithm}\n", text, count=1, flags=re.M))


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_doit(site: str, out: str, *options: str) -> tuple[float, float]:
    """(wall, CPU) seconds of one `doit certs` run."""
    start, cpu = time.monotonic(), _children_cpu()
    subprocess.run(DOIT + list(options) + ["certs", f"site={site}", f"out={out}"], check=True,
                   stdout=subprocess.DEVNULL, timeout=TIMEOUT, cwd=REPO)
    return time.monotonic() - start, _children_cpu() - cpu


def floor(count: int, algorithm: str) -> tuple[float, float]:
    """(wall, CPU) seconds to generate ``count`` bare keys in this process."""
    start, cpu = time.monotonic(), time.process_time()
    for _ in range(count):
        pki.new_private_key(algorithm)
    return time.monotonic() - start, time.process_time() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[10, 200])
    parser.add_argument("--algorithms", nargs="+", default=["rsa-2048", "ecdsa-p256"], choices=pki.ALGORITHMS)
    args = parser.parse_args()
    print(f"{'N':>4} {'algorithm':<11} {'items':>5}  {'floor wall/cpu':>14}  {'doit wall/cpu':>14}  "
          f"{'ratio wall/cpu':>14}  {'-n 2 wall':>9}  {'no-op':>6}")
    with tempfile.TemporaryDirectory(prefix="bench-certs-") as tmp:
        for n in args.sizes:
            for algorithm in args.algorithms:
                site = generate_site(n, os.path.join(tmp, f"site-{n}-{algorithm}"))
                set_algorithm(site, algorithm)
                out = os.path.join(tmp, f"out-{n}-{algorithm}")
                sequential = run_doit(site, out)
                noop = run_doit(site, out)
                with open(os.path.join(out, "state", "pki", "requests.json"), encoding="utf-8") as handle:
                    items = len(json.load(handle)["items"])
                base = floor(items, algorithm)
                parallel = run_doit(site, out + "-n2", "-n", "2")
                print(f"{n:>4} {algorithm:<11} {items:>5}  {base[0]:>6.2f}/{base[1]:<6.2f}s  "
                      f"{sequential[0]:>6.2f}/{sequential[1]:<6.2f}s  "
                      f"{sequential[0] / base[0]:>6.2f}/{sequential[1] / base[1]:<6.2f}x  "
                      f"{parallel[0]:>8.2f}s  {noop[0]:>5.2f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
