"""Payloads: deterministic tar.gz archives of file entries, and their gpg encryption.

A payload is a gzip'd tar whose bytes depend only on the entries: members sorted by path,
every parent directory present as an explicit member, owner root (uid/gid 0), each member's
mode taken from its entry, every mtime ``SOURCE_DATE_EPOCH`` (default :data:`DEFAULT_EPOCH`),
and a zero gzip header mtime. Entries are duck-typed: ``path`` (absolute target path),
``mode``, and either ``data`` (bytes) or ``symlink`` (link target).

Encryption is gpg symmetric (AES-256). The passphrase travels to gpg through a pipe
(``--passphrase-fd``), never on a command line. gpg output is random (salt, session key), so
:class:`CipherCache` keeps ciphertexts keyed by an HMAC of plaintext and key: rebuilding an
unchanged payload reuses the same ciphertext bytes.
"""

from __future__ import annotations

import atexit
import functools
import gzip
import hashlib
import hmac
import os
import subprocess
import tarfile
import tempfile
import zlib
from typing import Iterable

from .config import ENCRYPTION_KEY_VARIABLE
from .errors import PromenadeError
from .fileio import SECRET_MODE, atomic_write

DEFAULT_EPOCH = 315532800  # 1980-01-01T00:00:00Z, the usual reproducible-build floor
DIR_MODE = 0o755
COMPRESS_LEVEL = 6
#: per-node payloads (tens of KiB, one per node and build): a third of level 6's time, a tenth bigger
NODE_LEVEL = 1
GZIP_CHUNK = 8 << 20  # payloads above 8 MiB are compressed in parallel chunks of this size
GZIP_SAMPLE = 256 << 10  # how much of a chunk decides its compression strategy
GPG_TIMEOUT = 600


def source_date_epoch() -> int:
    """Member mtime: ``SOURCE_DATE_EPOCH`` from the environment, else :data:`DEFAULT_EPOCH`."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "")
    try:
        return int(value) if value else DEFAULT_EPOCH
    except ValueError:
        raise PromenadeError(f"SOURCE_DATE_EPOCH={value!r} is not a whole number of seconds") from None


def member_name(path: str) -> str:
    """Archive member name of a target path: ``/etc/hosts`` -> ``etc/hosts``."""
    name = os.path.normpath("/" + path).lstrip("/")
    if not name:
        raise PromenadeError(f"file entry path {path!r} does not name a file")
    return name


def dedupe(entries: Iterable) -> dict:
    """Entries by member name; a later entry for the same path replaces an earlier one."""
    by_name = {}
    for entry in entries:
        by_name[member_name(entry.path)] = entry
    return by_name


def _sort_key(name: str) -> list[str]:
    return name.split("/")


@functools.lru_cache(maxsize=8192)
def _header(name: str, kind: bytes, mode: int, size: int, linkname: str, mtime: int) -> bytes:
    """The tar header block(s) of one member, made by :mod:`tarfile` (cached: most repeat per node)."""
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.linkname, info.mtime = kind, mode, size, linkname, mtime
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")


def tar_bytes(entries: Iterable, *, mtime: int | None = None) -> bytes:
    """The uncompressed deterministic tar of ``entries``, laid out exactly as :mod:`tarfile` writes it.

    Headers come from ``tarfile``; this only concatenates them with the padded member data
    (and the end-of-archive blocks), so identical members cost one header build per run.
    """
    mtime = source_date_epoch() if mtime is None else mtime
    members = dedupe(entries)
    directories = set()
    for name in members:
        parts = name.split("/")[:-1]
        directories.update("/".join(parts[:depth]) for depth in range(1, len(parts) + 1))
    chunks = []
    for name in sorted(directories.difference(members) | set(members), key=_sort_key):
        entry = members.get(name)
        if entry is None:
            chunks.append(_header(name, tarfile.DIRTYPE, DIR_MODE, 0, "", mtime))
        elif getattr(entry, "symlink", None):
            chunks.append(_header(name, tarfile.SYMTYPE, 0o777, 0, entry.symlink, mtime))
        else:
            data = entry.data or b""
            chunks += [_header(name, tarfile.REGTYPE, entry.mode & 0o7777, len(data), "", mtime), data,
                       tarfile.NUL * (-len(data) % tarfile.BLOCKSIZE)]
    chunks.append(tarfile.NUL * (2 * tarfile.BLOCKSIZE))
    size = sum(map(len, chunks))
    chunks.append(tarfile.NUL * (-size % tarfile.RECORDSIZE))
    return b"".join(chunks)


def _sample_size(sample: bytes, level: int, strategy: int) -> int:
    compressor = zlib.compressobj(level, zlib.DEFLATED, -15, 9, strategy)
    return len(compressor.compress(sample) + compressor.flush())


def _gzip_member(level: int, chunk: bytes) -> bytes:
    """One gzip member (zero mtime) of ``chunk``.

    When a sample shows that string matching gains nothing (random bytes, base64 text),
    the chunk gets Huffman coding only: about the same size, three times faster.
    """
    sample = chunk[:GZIP_SAMPLE]
    matching_useless = (_sample_size(sample, 1, zlib.Z_HUFFMAN_ONLY)
                        <= _sample_size(sample, 1, zlib.Z_DEFAULT_STRATEGY))
    strategy = zlib.Z_HUFFMAN_ONLY if matching_useless else zlib.Z_DEFAULT_STRATEGY
    compressor = zlib.compressobj(level, zlib.DEFLATED, 31, 9, strategy)  # 31: gzip wrapper
    return compressor.compress(chunk) + compressor.flush()


def gzip_bytes(data: bytes, level: int = COMPRESS_LEVEL) -> bytes:
    """Deterministic gzip of ``data`` (zero header mtime, no file name) at compression ``level``.

    Data bigger than :data:`GZIP_CHUNK` is cut into fixed-size chunks compressed on every core
    (zlib releases the GIL) into consecutive gzip members, which gzip, ``tar -xz`` and Python's
    gzip module read as one stream; the bytes depend only on ``data``.
    """
    if len(data) <= GZIP_CHUNK:
        return gzip.compress(data, compresslevel=level, mtime=0)
    import concurrent.futures  # imported for big payloads only: a one-node rebuild never needs threads

    view = memoryview(data)
    chunks = [view[start:start + GZIP_CHUNK] for start in range(0, len(data), GZIP_CHUNK)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return b"".join(pool.map(functools.partial(_gzip_member, level), chunks))


def tar_gz(entries: Iterable, *, mtime: int | None = None, level: int = COMPRESS_LEVEL) -> bytes:
    """The deterministic tar.gz of ``entries`` (see :func:`gzip_bytes`)."""
    return gzip_bytes(tar_bytes(entries, mtime=mtime), level)


def encryption_key(required: bool) -> str | None:
    """The build-time passphrase from ``PROMENADE_ENCRYPTION_KEY``; an error if required and unset."""
    key = os.environ.get(ENCRYPTION_KEY_VARIABLE, "")
    if required and not key:
        raise PromenadeError(
            f"the EncryptionPolicy asks for gpg-encrypted scripts but {ENCRYPTION_KEY_VARIABLE} is not set; "
            f"export the passphrase the nodes will use (for example: export {ENCRYPTION_KEY_VARIABLE}="
            '"$(openssl rand -hex 48)") and build again')
    return key or None


_gpg_home: list[tempfile.TemporaryDirectory] = []


def _stop_gpg() -> None:
    """Stop the agent of this process's gpg home and delete the home."""
    while _gpg_home:
        home = _gpg_home.pop()
        subprocess.run(["gpgconf", "--homedir", home.name, "--kill", "all"], capture_output=True, check=False)
        home.cleanup()


def _home() -> str:
    """One private gpg home per process: its agent starts once (about 1 s) instead of per call."""
    if not _gpg_home:
        _gpg_home.append(tempfile.TemporaryDirectory(prefix="promenade-gpg-"))
        atexit.register(_stop_gpg)
    return _gpg_home[0].name


def _run_gpg(args: list[str], data: bytes, passphrase: str) -> bytes:
    """Run gpg in the private home with the passphrase on a pipe (never argv or logs)."""
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, passphrase.encode("utf-8"))
        os.close(write_fd)
        write_fd = -1
        command = ["gpg", "--homedir", _home(), "--batch", "--quiet", "--no-tty", "--no-options",
                   "--pinentry-mode", "loopback", "--passphrase-fd", str(read_fd), "--no-symkey-cache", *args]
        try:
            proc = subprocess.run(command, input=data, capture_output=True, pass_fds=(read_fd,),
                                  timeout=GPG_TIMEOUT, check=False)
        except FileNotFoundError:
            raise PromenadeError("gpg is needed to encrypt payloads but is not installed "
                                 "(apt-get install gnupg)") from None
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)
    if proc.returncode != 0:
        raise PromenadeError(f"gpg failed ({proc.returncode}): {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


def gpg_encrypt(data: bytes, passphrase: str) -> bytes:
    """Symmetric AES-256 gpg encryption of ``data`` (binary OpenPGP message)."""
    return _run_gpg(["--symmetric", "--cipher-algo", "AES256", "--compress-algo", "none",
                     "--output", "-"], data, passphrase)


def gpg_decrypt(data: bytes, passphrase: str) -> bytes:
    """Inverse of :func:`gpg_encrypt`."""
    return _run_gpg(["--decrypt", "--output", "-"], data, passphrase)


class CipherCache:
    """Ciphertexts stored by HMAC(key, sha256(plaintext)), so unchanged payloads keep their bytes."""

    def __init__(self, directory: str):
        self.directory = directory

    def encrypt(self, data: bytes, passphrase: str) -> bytes:
        digest = hashlib.sha256(data).digest()
        label = hmac.new(passphrase.encode("utf-8"), digest, hashlib.sha256).hexdigest()
        path = os.path.join(self.directory, label + ".gpg")
        try:
            with open(path, "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            pass
        cipher = gpg_encrypt(data, passphrase)
        atomic_write(path, cipher, SECRET_MODE)
        return cipher


def seal(data: bytes, passphrase: str | None, cache: CipherCache | None = None) -> bytes:
    """``data`` encrypted with ``passphrase`` (through ``cache`` when given), or as is without one."""
    if passphrase is None:
        return data
    if cache is not None:
        return cache.encrypt(data, passphrase)
    return gpg_encrypt(data, passphrase)
