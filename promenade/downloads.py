"""Build-time downloads for HostSystem / Genesis file entries (``url`` and ``tar_url`` + ``tar_path``).

Every fetch has a timeout and a bounded number of retries with a growing pause. Content lives
in a content-addressed cache, ``<out>/cache/``:

* ``sha256/<hex>``: blobs by the sha256 of their bytes;
* ``urls/<sha256 of url>``: the hex digest last fetched from that URL;
* ``members/<sha256 of tarball hex + path>``: the hex digest of a member extracted from a tarball.

A URL is therefore fetched once per cache, and an entry pinned with ``sha256`` is served from the
cache without any network access. With ``PROMENADE_OFFLINE=1`` nothing is fetched; an entry whose
content is not cached is an error naming the entry, as is any download that still fails after
its retries.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import time

from .errors import PromenadeError
from .fileio import atomic_write, ensure_dir

TIMEOUT = 60
RETRIES = 3
BACKOFF = 1.0
CHUNK = 1 << 20
OFFLINE_VARIABLE = "PROMENADE_OFFLINE"


class DownloadError(Exception):
    """A fetch failed; the caller turns it into a Problem naming the file entry."""


def _key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def offline() -> bool:
    return os.environ.get(OFFLINE_VARIABLE, "") not in ("", "0")


class Cache:
    """The content-addressed download cache of one output directory."""

    def __init__(self, directory: str, *, timeout: float = TIMEOUT, retries: int = RETRIES,
                 backoff: float = BACKOFF):
        self.directory = directory
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff

    def blob_path(self, digest: str) -> str:
        return os.path.join(self.directory, "sha256", digest)

    def _read_pointer(self, kind: str, key: str) -> str | None:
        try:
            with open(os.path.join(self.directory, kind, key), encoding="ascii") as handle:
                digest = handle.read().strip()
        except FileNotFoundError:
            return None
        return digest if os.path.exists(self.blob_path(digest)) else None

    def _write_pointer(self, kind: str, key: str, digest: str) -> None:
        atomic_write(os.path.join(self.directory, kind, key), digest + "\n")

    def _store_file(self, source: str) -> str:
        """Move a fully written temporary file into the cache; return its digest."""
        digest = hashlib.sha256()
        with open(source, "rb") as handle:
            for chunk in iter(lambda: handle.read(CHUNK), b""):
                digest.update(chunk)
        hexdigest = digest.hexdigest()
        target = self.blob_path(hexdigest)
        ensure_dir(os.path.dirname(target))
        os.replace(source, target)
        return hexdigest

    def _fetch(self, url: str) -> str:
        """Download ``url`` into the cache (bounded retries); return the content digest."""
        if offline():
            raise DownloadError(f"not in the download cache and {OFFLINE_VARIABLE} is set")
        import urllib.error  # imported on use: most builds find everything in the cache
        import urllib.request

        ensure_dir(os.path.join(self.directory, "tmp"))
        last = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * attempt)
            fd, tmp = tempfile.mkstemp(dir=os.path.join(self.directory, "tmp"))
            try:
                with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=self.timeout) as response:
                    shutil.copyfileobj(response, out, CHUNK)
                return self._store_file(tmp)
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code} {exc.reason}"
                if 400 <= exc.code < 500 and exc.code not in (408, 429):
                    break
            except (urllib.error.URLError, OSError, ValueError) as exc:
                last = str(getattr(exc, "reason", None) or exc)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        raise DownloadError(f"download of {url} failed after {attempt + 1} attempt(s): {last}")

    def url_digest(self, url: str, pinned: str | None = None) -> str:
        """Digest of the cached content of ``url``, fetching it if needed."""
        if pinned and os.path.exists(self.blob_path(pinned)):
            return pinned
        digest = self._read_pointer("urls", _key(url))
        if digest is None or (pinned and digest != pinned):  # a pin that disagrees: fetch again
            digest = self._fetch(url)
            self._write_pointer("urls", _key(url), digest)
        return digest

    def member_digest(self, tar_url: str, tar_path: str, pinned: str | None = None) -> str:
        """Digest of member ``tar_path`` of the (compressed) tarball at ``tar_url``."""
        if pinned and os.path.exists(self.blob_path(pinned)):
            return pinned
        tarball = self.url_digest(tar_url)
        key = _key(f"{tarball}\0{tar_path}")
        digest = self._read_pointer("members", key)
        if digest is not None:
            return digest
        wanted = os.path.normpath(tar_path.lstrip("/"))
        try:
            with tarfile.open(self.blob_path(tarball), mode="r:*") as tar:
                for member in tar:
                    if os.path.normpath(member.name.lstrip("/")) == wanted and member.isfile():
                        fd, tmp = tempfile.mkstemp(dir=os.path.join(self.directory, "tmp"))
                        with os.fdopen(fd, "wb") as out:
                            shutil.copyfileobj(tar.extractfile(member), out, CHUNK)
                        digest = self._store_file(tmp)
                        break
                else:
                    raise DownloadError(f"{tar_url} has no regular file {tar_path!r}")
        except tarfile.TarError as exc:
            raise DownloadError(f"{tar_url} is not a readable tar archive: {exc}") from None
        self._write_pointer("members", key, digest)
        return digest

    def read(self, digest: str) -> bytes:
        with open(self.blob_path(digest), "rb") as handle:
            return handle.read()


def resolve(cache: Cache, spec: dict, problem) -> bytes:
    """The bytes of a ``url`` or ``tar_url`` + ``tar_path`` file entry.

    ``problem(message)`` builds the :class:`Problem` that names the entry (document, path).
    """
    pinned = spec.get("sha256")
    try:
        if spec.get("tar_url"):
            if not spec.get("tar_path"):
                raise DownloadError("tar_url needs tar_path (the member to extract)")
            digest = cache.member_digest(spec["tar_url"], spec["tar_path"], pinned)
        else:
            digest = cache.url_digest(spec["url"], pinned)
    except DownloadError as exc:
        raise PromenadeError(problem(f"cannot get content for {spec.get('path')}: {exc}")) from None
    if pinned and digest != pinned:
        raise PromenadeError(problem(f"content for {spec.get('path')} has sha256 {digest}, "
                                     f"but the entry pins {pinned}"))
    return cache.read(digest)

