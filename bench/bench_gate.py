"""Wall time of gate scenarios on sandbox nodes (root), cold or warm image cache.

    .venv/bin/python bench/bench_gate.py [SCENARIO ...] [--cold]

Prints the image build time (``--cold`` builds the node image into an empty temporary cache;
otherwise the cached image is reused) and, per scenario, the time of each stage and the total.
Every scenario run is bounded by its stages' own timeouts; the target for ``resiliency`` is
under 3 minutes with a warm image.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from promenade.gates import image  # noqa: E402
from promenade.gates.scenario import run_gate  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", default=["smoke", "resiliency"])
    parser.add_argument("--cold", action="store_true", help="build the image into an empty cache first")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-gate-") as tmp:
        if args.cold:
            os.environ["PROMENADE_GATE_CACHE"] = os.path.join(tmp, "cache")
        start = time.monotonic()
        image.ensure_image(progress=lambda _m: None)
        print(f"image ({'cold' if args.cold else 'warm'}): {time.monotonic() - start:.1f} s")
        failed = 0
        for name in args.scenarios:
            start = time.monotonic()
            report = run_gate(name, os.path.join(tmp, "out"), progress=lambda _m: None)
            total = time.monotonic() - start
            stages = ", ".join(f"{s.name} {s.seconds:.1f}" for s in report.stages)
            print(f"{name}: {'passed' if report.ok else 'FAILED'} in {total:.1f} s ({stages})")
            failed += not report.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
