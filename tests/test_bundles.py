"""Deterministic payload archives and gpg encryption."""

from __future__ import annotations

import base64
import gzip
import io
import random
import stat
import struct
import subprocess
import tarfile

import pytest

from promenade import bundles
from promenade.errors import PromenadeError
from promenade.trees import FileEntry

ENTRIES = [
    FileEntry("/usr/local/bin/tool", 0o555, b"#!/bin/sh\necho hi\n"),
    FileEntry("/etc/kubernetes/pki/key.pem", 0o600, b"secret"),
    FileEntry("/etc/hosts", 0o644, b"127.0.0.1 localhost\n"),
    FileEntry("/etc/alternatives/editor", 0o777, symlink="/usr/bin/vi"),
]


def _members(blob: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        return tar.getmembers()


def test_archive_is_sorted_with_explicit_directories_and_root_owner():
    members = _members(bundles.tar_gz(ENTRIES))
    names = [m.name for m in members]
    assert names == ["etc", "etc/alternatives", "etc/alternatives/editor", "etc/hosts", "etc/kubernetes",
                     "etc/kubernetes/pki", "etc/kubernetes/pki/key.pem", "usr", "usr/local", "usr/local/bin",
                     "usr/local/bin/tool"]
    by_name = {m.name: m for m in members}
    assert by_name["etc"].isdir() and stat.S_IMODE(by_name["etc"].mode) == 0o755
    assert stat.S_IMODE(by_name["etc/kubernetes/pki/key.pem"].mode) == 0o600
    assert stat.S_IMODE(by_name["usr/local/bin/tool"].mode) == 0o555
    assert by_name["etc/alternatives/editor"].issym() and by_name["etc/alternatives/editor"].linkname == "/usr/bin/vi"
    assert all(m.uid == 0 and m.gid == 0 and m.uname == "root" for m in members)
    assert {m.mtime for m in members} == {bundles.DEFAULT_EPOCH}


def test_same_entries_give_same_bytes_in_any_order(monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    first = bundles.tar_gz(ENTRIES)
    assert bundles.tar_gz(list(reversed(ENTRIES))) == first
    assert struct.unpack("<I", first[4:8]) == (0,)  # gzip header mtime
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    other = bundles.tar_gz(ENTRIES)
    assert other != first and {m.mtime for m in _members(other)} == {1700000000}


def test_later_entry_for_a_path_wins():
    blob = bundles.tar_gz(ENTRIES + [FileEntry("/etc/hosts", 0o600, b"override\n")])
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        assert tar.extractfile("etc/hosts").read() == b"override\n"
        assert stat.S_IMODE(tar.getmember("etc/hosts").mode) == 0o600


def test_bad_source_date_epoch_is_reported(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(PromenadeError, match="SOURCE_DATE_EPOCH"):
        bundles.tar_gz(ENTRIES)


def test_gpg_round_trip_with_the_gpg_command(tmp_path):
    plain = bundles.tar_gz(ENTRIES)
    cipher = bundles.gpg_encrypt(plain, "s3cret passphrase")
    assert cipher != plain and b"s3cret" not in cipher
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    try:
        decrypted = subprocess.run(
            ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback",
             "--passphrase", "s3cret passphrase", "--decrypt"],
            input=cipher, capture_output=True, check=True).stdout
        wrong = subprocess.run(
            ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback", "--passphrase", "nope",
             "--decrypt"], input=cipher, capture_output=True)
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)
    assert decrypted == plain
    assert wrong.returncode != 0


def test_cipher_cache_keeps_ciphertext_for_unchanged_payloads(tmp_path):
    cache = bundles.CipherCache(str(tmp_path / "ciphers"))
    first = bundles.seal(b"payload", "key", cache)
    assert bundles.seal(b"payload", "key", cache) == first
    assert bundles.seal(b"payload", "other key", cache) != first
    assert bundles.gpg_decrypt(first, "key") == b"payload"
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in (tmp_path / "ciphers").iterdir())
    assert bundles.seal(b"payload", None, cache) == b"payload"


def test_encryption_key_required_but_missing(monkeypatch):
    monkeypatch.delenv(bundles.ENCRYPTION_KEY_VARIABLE, raising=False)
    assert bundles.encryption_key(required=False) is None
    with pytest.raises(PromenadeError, match="PROMENADE_ENCRYPTION_KEY is not set"):
        bundles.encryption_key(required=True)


def test_archive_layout_is_exactly_what_tarfile_writes():
    """The fast writer's bytes equal tarfile's own output for the same members."""
    blob = bundles.tar_bytes(ENTRIES, mtime=1234567890)
    expected = io.BytesIO()
    with tarfile.open(fileobj=expected, mode="w", format=tarfile.GNU_FORMAT) as tar:
        with tarfile.open(fileobj=io.BytesIO(blob)) as ours:
            for member in ours.getmembers():
                tar.addfile(member, ours.extractfile(member) if member.isfile() else None)
    assert blob == expected.getvalue()
    long_name = FileEntry("/opt/" + "x" * 150 + "/file", 0o644, b"data")
    with tarfile.open(fileobj=io.BytesIO(bundles.tar_bytes([long_name]))) as tar:
        assert tar.extractfile("opt/" + "x" * 150 + "/file").read() == b"data"


def test_big_payload_is_compressed_in_chunks_that_tar_reads_as_one_archive(monkeypatch, tmp_path):
    monkeypatch.setattr(bundles, "GZIP_CHUNK", 64 << 10)
    monkeypatch.setattr(bundles, "GZIP_SAMPLE", 8 << 10)
    noise = base64.b64encode(random.Random(7).randbytes(300 << 10))  # matching gains nothing here
    text = b"".join(b"line %d of a compressible file\n" % i for i in range(12000))
    entries = [FileEntry("/opt/noise.b64", 0o644, noise), FileEntry("/opt/text", 0o600, text)]
    blob = bundles.tar_gz(entries)
    assert blob == bundles.tar_gz(list(reversed(entries)))  # deterministic
    assert blob.count(b"\x1f\x8b\x08") >= len(bundles.tar_bytes(entries)) // (64 << 10)  # several members
    assert len(blob) < 0.8 * (len(noise) + len(text))
    assert gzip.decompress(blob) == bundles.tar_bytes(entries)
    (tmp_path / "payload.tar.gz").write_bytes(blob)
    subprocess.run(["tar", "-xzf", str(tmp_path / "payload.tar.gz"), "-C", str(tmp_path)], check=True)
    assert (tmp_path / "opt" / "noise.b64").read_bytes() == noise
    assert (tmp_path / "opt" / "text").read_bytes() == text
