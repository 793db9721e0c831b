"""Load test of the script server next to nginx and ``python -m http.server``, on loopback.

Builds the embedded site (``doit certs build tokens``) into a temporary directory, then runs
``wrk`` (200 connections, 20 s by default) against three servers of the same files in turn:
Promenade (``promenade.server``, node tokens required), nginx (Debian package, own process with
a temporary config) and ``http.server``. Every request fetches a join script with that node's
bearer token. Prints requests/s, p50/p99 latency, errors and the server's peak RSS, and whether
Promenade met its targets (0 errors, >= 0.3x nginx and >= 10x http.server throughput).

Usage (as root, Debian): ``.venv/bin/python bench/bench_serve.py [--seconds 20] [--connections 200]``
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APT = ("nginx", "wrk")

NGINX_CONF = """
worker_processes {workers};
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
daemon off;
events {{ worker_connections 4096; }}
http {{
    access_log {tmp}/nginx-access.log;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    types {{ text/x-shellscript sh; }}
    sendfile on;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""

WRK_SCRIPT = """
local paths = {{{paths}}}
local tokens = {{{tokens}}}
local n = 0
request = function()
    n = n + 1
    local k = (n % #paths) + 1
    return wrk.format("GET", paths[k], {{["Authorization"] = "Bearer " .. tokens[k]}})
end
"""


def ensure_packages() -> None:
    missing = [pkg for pkg in APT if shutil.which(pkg) is None and not os.path.exists(f"/usr/sbin/{pkg}")]
    if missing:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], check=True, env=env,
                       timeout=600, stdout=subprocess.DEVNULL)
        subprocess.run(["systemctl", "disable", "--now", "nginx"], check=False, capture_output=True, timeout=60)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_site(tmp: str) -> tuple[str, dict]:
    site, out = os.path.join(tmp, "site"), os.path.join(tmp, "build")
    shutil.copytree(os.path.join(ROOT, "site"), site)
    subprocess.run([sys.executable, "-m", "doit", "-f", os.path.join(ROOT, "dodo.py"), "certs", "build", "tokens",
                    f"site={site}", f"out={out}"], cwd=ROOT, check=True, capture_output=True, timeout=600)
    with open(os.path.join(out, "tokens.yaml")) as handle:
        return out, yaml.safe_load(handle)


def wait_until_up(url: str, proc: subprocess.Popen) -> None:
    for _ in range(200):
        if proc.poll() is not None:
            raise SystemExit(f"server for {url} exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError as exc:
            if getattr(exc, "code", None):  # an HTTP error answer: the server is up
                return
            time.sleep(0.05)
    raise SystemExit(f"server for {url} did not start")


def peak_rss_mib(pid: int) -> float:
    """Peak resident memory (VmHWM) of a process and all its descendants, in MiB."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            with open(f"/proc/{current}/status") as handle:
                total += int(re.search(r"VmHWM:\s+(\d+)", handle.read()).group(1))
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as handle:
                    todo.extend(int(child) for child in handle.read().split())
        except (FileNotFoundError, ProcessLookupError, AttributeError):
            continue
    return total / 1024


def run_wrk(url: str, script: str, seconds: int, connections: int) -> dict:
    proc = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "--latency",
                           "-s", script, url], capture_output=True, text=True, timeout=seconds + 60)
    text = proc.stdout

    def latency_ms(label: str) -> float:
        value, unit = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {
        "requests": int(re.search(r"(\d+) requests in", text).group(1)),
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),
        "p50_ms": latency_ms("50"),
        "p99_ms": latency_ms("99"),
        "errors": (sum(map(int, socket_errors.groups())) if socket_errors else 0)
        + (int(non_2xx.group(1)) if non_2xx else 0),
    }


def measure(name: str, argv: list[str], port: int, path: str, script: str, args, env=None) -> dict:
    log = open(os.path.join(os.path.dirname(script), f"{name}.log"), "w")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        wait_until_up(f"http://127.0.0.1:{port}{path}", proc)
        result = run_wrk(f"http://127.0.0.1:{port}", script, args.seconds, args.connections)
        result["peak_rss_mib"] = round(peak_rss_mib(proc.pid), 1)
        return {"server": name, **result}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="worker processes for Promenade and nginx alike (default: CPU count)")
    args = parser.parse_args()
    ensure_packages()
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        out, tokens = build_site(tmp)
        nodes = sorted(tokens["nodes"])
        script = os.path.join(tmp, "join.lua")
        with open(script, "w") as handle:
            handle.write(WRK_SCRIPT.format(paths=", ".join(f'"/join-{n}.sh"' for n in nodes),
                                           tokens=", ".join(f'"{tokens["nodes"][n]}"' for n in nodes)))
        os.chmod(tmp, 0o755)  # nginx workers run as www-data
        public = os.path.join(tmp, "public")  # a world-readable copy for nginx and http.server
        os.mkdir(public)
        for node in nodes:
            shutil.copy(os.path.join(out, f"join-{node}.sh"), public)
            os.chmod(os.path.join(public, f"join-{node}.sh"), 0o644)
        results = []
        port = free_port()
        results.append(measure("promenade", [sys.executable, "-m", "promenade.server", "--out", out, "--port",
                                             str(port), "--workers", str(args.workers)],
                               port, "/api/v1.0/health", script, args))
        port = free_port()
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as handle:
            handle.write(NGINX_CONF.format(workers=args.workers, tmp=tmp, port=port, root=public))
        results.append(measure("nginx", ["nginx", "-c", conf, "-p", tmp], port, f"/join-{nodes[0]}.sh", script, args))
        port = free_port()
        results.append(measure("http.server", [sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                                               "--directory", public, str(port)],
                               port, f"/join-{nodes[0]}.sh", script, args))
    by_name = {r["server"]: r for r in results}
    promenade = by_name["promenade"]
    ratios = {"vs_nginx": promenade["requests_per_s"] / by_name["nginx"]["requests_per_s"],
              "vs_http_server": promenade["requests_per_s"] / by_name["http.server"]["requests_per_s"]}
    ok = promenade["errors"] == 0 and ratios["vs_nginx"] >= 0.3 and ratios["vs_http_server"] >= 10
    print(f"{'server':<12} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'peak RSS MiB':>13}")
    for r in results:
        print(f"{r['server']:<12} {r['requests_per_s']:>10.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
              f"{r['errors']:>7} {r['peak_rss_mib']:>13.1f}")
    print(f"promenade: {ratios['vs_nginx']:.2f}x nginx, {ratios['vs_http_server']:.1f}x http.server "
          f"({args.connections} connections, {args.seconds} s, {args.workers} workers) -> "
          f"{'targets met' if ok else 'TARGETS MISSED'}")
    print(json.dumps({"results": results, "ratios": ratios, "targets_met": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
