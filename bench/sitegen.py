"""Synthetic sites for benchmarks: the embedded site plus N worker nodes.

``python bench/sitegen.py N OUTDIR`` copies ``site/`` to OUTDIR and adds, in two files of its
``site`` layer, N ``promenade/KubernetesNode/v1`` documents (workers ``w0`` … ``w<N-1>``,
addresses from 192.168.128.0/17, joining through the genesis node) and a second PKICatalog
with their kubelet certificates. ``generate_site(n, out_dir, labels=...)`` does the same from
Python; calling it again with other labels for one node rewrites only what changed.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import shutil
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from promenade.fileio import atomic_write  # noqa: E402
from promenade.yamlio import dump_yaml  # noqa: E402

SITE = os.path.join(REPO, "site")
FIRST_IP = ipaddress.IPv4Address("192.168.128.1")
MAX_NODES = 32000  # stays inside 192.168.128.0/17
GENESIS_IP = "192.168.77.10"
NODES_FILE = os.path.join("site", "generated-nodes.yaml")
CATALOG_FILE = os.path.join("site", "generated-pki-catalog.yaml")
WORKER_LABELS = ("node-type=worker",)


def _metadata(name: str) -> dict:
    return {"schema": "metadata/Document/v1", "name": name, "storagePolicy": "cleartext",
            "layeringDefinition": {"abstract": False, "layer": "site"}}


def worker(index: int, labels: tuple[str, ...] = WORKER_LABELS) -> dict:
    """The KubernetesNode document of worker ``w<index>``."""
    name = f"w{index}"
    return {"schema": "promenade/KubernetesNode/v1", "metadata": _metadata(name),
            "data": {"hostname": name, "ip": str(FIRST_IP + index), "join_ip": GENESIS_IP,
                     "labels": {"dynamic": list(labels)}}}


def catalog(n: int) -> dict:
    """A PKICatalog with the kubelet certificate of every worker."""
    certificates = [{"document_name": f"kubelet-w{i}", "common_name": f"system:node:w{i}",
                     "hosts": [f"w{i}", str(FIRST_IP + i)], "groups": ["system:nodes"]} for i in range(n)]
    return {"schema": "promenade/PKICatalog/v1", "metadata": _metadata("generated-node-certificates"),
            "data": {"certificate_authorities": {"kubernetes": {"certificates": certificates}}}}


def generate_site(n: int, out_dir: str, labels: dict[int, tuple[str, ...]] | None = None) -> str:
    """Write the embedded site plus ``n`` workers to ``out_dir``; return ``out_dir``.

    ``labels`` maps a worker index to its dynamic labels (default ``node-type=worker``).
    Files whose content is unchanged are left untouched.
    """
    if not 0 <= n <= MAX_NODES:
        raise ValueError(f"N must be between 0 and {MAX_NODES}")
    labels = labels or {}
    shutil.copytree(SITE, out_dir, dirs_exist_ok=True)
    nodes = [worker(i, tuple(labels.get(i, WORKER_LABELS))) for i in range(n)]
    atomic_write(os.path.join(out_dir, NODES_FILE), dump_yaml(nodes, many=True) if nodes else "")
    atomic_write(os.path.join(out_dir, CATALOG_FILE), dump_yaml(catalog(n)) if n else "")
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, help="number of extra worker nodes")
    parser.add_argument("out_dir", help="directory to write the site to")
    args = parser.parse_args(argv)
    generate_site(args.n, args.out_dir)
    print(f"{args.out_dir}: embedded site + {args.n} worker nodes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
