"""Render + validate time for synthetic sites of N extra nodes, next to the YAML-parsing floor.

    .venv/bin/python bench/bench_render.py [N ...] [--runs R]

For each N the floor is parsing the same files with PyYAML's C loader (``yaml.CSafeLoader``);
the measured figure is Promenade's load + render (lenient) + validate of those files. Each
figure is the median of R runs in this process, alternating floor and measurement.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import yaml

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

from sitegen import generate_site  # noqa: E402

from promenade.documents import site_files  # noqa: E402
from promenade.tasks.render import render_and_validate  # noqa: E402
from promenade.validation import forget_valid  # noqa: E402


def floor(paths):
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            list(yaml.load_all(handle, Loader=yaml.CSafeLoader))


def measure(paths):
    forget_valid()  # as in a new process: every document is validated
    render_and_validate(paths, strict=False)


def timed(func, paths):
    start = time.perf_counter()
    func(paths)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[10, 200, 1000])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"{'N':>6} {'files':>6} {'floor s':>9} {'render+validate s':>18} {'ratio':>6}")
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            site = os.path.join(tmp, "site")
            generate_site(n, site)
            paths = site_files(site)
            measure(paths)  # warm-up (imports, schema compilation)
            floors, runs = [], []
            for _ in range(args.runs):
                floors.append(timed(floor, paths))
                runs.append(timed(measure, paths))
            f, r = statistics.median(floors), statistics.median(runs)
            print(f"{n:>6} {len(paths):>6} {f:>9.3f} {r:>18.3f} {r / f:>6.2f}")


if __name__ == "__main__":
    main()
