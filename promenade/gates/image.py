"""The cached Debian root filesystem that sandbox nodes boot from.

The image is ``debootstrap --variant=minbase`` plus every package the generated scripts
would install (sandbox nodes cannot reach a registry), built once and kept under a cache
directory outside the repository, keyed by a hash of suite, mirror and package list. A build
happens in a temporary directory that is renamed into place, under a lock, so concurrent
runs share one build and a killed build never leaves a half image behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time

from promenade.gates.provider import GateError

SUITE = "bookworm"
FORMAT = 1  # bump when the fix-ups below change
# The node baseline plus what the embedded site's HostSystem installs (packages.common):
# chrony, conntrack, containerd, curl, ethtool, jq, socat.
PACKAGES = (
    "ca-certificates", "chrony", "conntrack", "containerd", "curl", "dbus", "etcd-client",
    "etcd-server", "ethtool", "gnupg", "haproxy", "iproute2", "iputils-ping", "jq", "kmod",
    "openssh-server", "openssl", "procps", "python3", "python3-yaml", "socat", "sudo", "systemd",
    "systemd-sysv",
)
# a debootstrap or apt-get run from a slow mirror takes minutes; a hung one must not hang CI
STEP_TIMEOUT = 1200
# Debian enables these with their packaged configuration; nodes run only what the scripts set up.
DISABLED_UNITS = ("etcd.service", "haproxy.service")


def cache_dir() -> str:
    """Where images live: ``$PROMENADE_GATE_CACHE`` or ``/var/cache/promenade-gate``."""
    return os.environ.get("PROMENADE_GATE_CACHE", "/var/cache/promenade-gate")


def host_mirror() -> str:
    """The Debian mirror apt on this host uses (debootstrap fetches from the same place)."""
    if os.path.exists("/etc/apt/sources.list.d/debian.sources"):
        with open("/etc/apt/sources.list.d/debian.sources", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("URIs:"):
                    return line.split()[1]
    if os.path.exists("/etc/apt/sources.list"):
        with open("/etc/apt/sources.list", encoding="utf-8") as handle:
            for line in handle:
                words = line.split()
                if len(words) >= 3 and words[0] == "deb" and "security" not in words[1]:
                    return words[1]
    return "http://deb.debian.org/debian"


def image_key(suite: str = SUITE, packages: tuple[str, ...] = PACKAGES, mirror: str | None = None) -> str:
    """Hash of everything that determines the image's content."""
    spec = {"suite": suite, "packages": sorted(packages), "mirror": mirror or host_mirror(), "format": FORMAT}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def image_path(key: str | None = None) -> str:
    """Root filesystem directory of the image with ``key`` (default: the current one)."""
    return os.path.join(cache_dir(), "images", key or image_key(), "rootfs")


@contextlib.contextmanager
def _lock(path: str):
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(argv: list[str], log) -> None:
    """One build step, bounded by :data:`STEP_TIMEOUT`; a failure is a :class:`GateError` naming the log."""
    log.write(f"$ {' '.join(argv)}\n")
    log.flush()
    try:
        subprocess.run(argv, check=True, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                       timeout=STEP_TIMEOUT)
    except subprocess.CalledProcessError as exc:
        raise GateError(f"gate image: `{' '.join(argv[:4])} ...` exited {exc.returncode}; see {log.name}") from None
    except subprocess.TimeoutExpired:
        raise GateError(f"gate image: `{' '.join(argv[:4])} ...` took over {STEP_TIMEOUT} s; see {log.name}") from None


def _security_mirror(mirror: str) -> str:
    return mirror.rstrip("/") + "-security" if mirror.rstrip("/").endswith("/debian") else mirror


def _install_packages(root: str, mirror: str, log) -> None:
    """Install :data:`PACKAGES` into ``root`` with no daemon starting during the build."""
    policy = os.path.join(root, "usr/sbin/policy-rc.d")
    with open(policy, "w", encoding="utf-8") as handle:
        handle.write("#!/bin/sh\nexit 101\n")
    os.chmod(policy, 0o755)
    with open(os.path.join(root, "etc/apt/sources.list"), "w", encoding="utf-8") as handle:
        handle.write(
            f"deb {mirror} {SUITE} main\ndeb {mirror} {SUITE}-updates main\n"
            f"deb {_security_mirror(mirror)} {SUITE}-security main\n"
        )
    shutil.copyfile("/etc/resolv.conf", os.path.join(root, "etc/resolv.conf"))
    proc = os.path.join(root, "proc")
    _run(["mount", "-t", "proc", "proc", proc], log)
    try:
        env = "DEBIAN_FRONTEND=noninteractive"
        _run(["chroot", root, "sh", "-c", "apt-get update -qq && " + env +
              " apt-get install -y -qq --no-install-recommends " + " ".join(PACKAGES)], log)
        _run(["chroot", root, "apt-get", "clean"], log)
    finally:
        subprocess.run(["umount", "-l", proc], check=False)
    os.unlink(policy)


def _fix_up(root: str, log) -> None:
    """Changes a booted node needs: no DNS, no packaged daemons, per-node host keys."""
    shutil.rmtree(os.path.join(root, "var/lib/apt/lists"), ignore_errors=True)
    os.makedirs(os.path.join(root, "var/lib/apt/lists/partial"), exist_ok=True)
    with open(os.path.join(root, "etc/resolv.conf"), "w", encoding="utf-8"):
        pass
    for unit in DISABLED_UNITS:
        _run(["systemctl", f"--root={root}", "disable", unit], log)
    for name in os.listdir(os.path.join(root, "etc/ssh")):
        if name.startswith("ssh_host_"):
            os.unlink(os.path.join(root, "etc/ssh", name))
    with open(os.path.join(root, "etc/hostname"), "w", encoding="utf-8") as handle:
        handle.write("node\n")


def ensure_image(log_path: str | None = None, progress=print) -> str:
    """Return the cached image's root, building it first if it is missing."""
    key = image_key()
    target = image_path(key)
    if os.path.isdir(target):
        return target
    with _lock(os.path.join(cache_dir(), "build.lock")):
        if os.path.isdir(target):
            return target
        mirror = host_mirror()
        os.makedirs(os.path.dirname(os.path.dirname(target)), mode=0o700, exist_ok=True)
        scratch = tempfile.mkdtemp(prefix=f".build-{key}-", dir=cache_dir())
        root = os.path.join(scratch, "rootfs")
        log_path = log_path or os.path.join(cache_dir(), f"build-{key}.log")
        start = time.monotonic()
        progress(f"gate image {key}: building with debootstrap from {mirror} (log: {log_path})")
        try:
            with open(log_path, "w", encoding="utf-8") as log:
                _run(["debootstrap", "--variant=minbase", SUITE, root, mirror], log)
                _install_packages(root, mirror, log)
                _fix_up(root, log)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.rename(root, target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        progress(f"gate image {key}: built in {time.monotonic() - start:.1f} s")
    return target


def prune_images(keep: str | None = None) -> list[str]:
    """Delete cached images other than ``keep`` (default: the current key); return their keys."""
    keep = keep or image_key()
    base = os.path.join(cache_dir(), "images")
    removed = []
    if os.path.isdir(base):
        for key in sorted(os.listdir(base)):
            if key != keep:
                shutil.rmtree(os.path.join(base, key), ignore_errors=True)
                removed.append(key)
    return removed
