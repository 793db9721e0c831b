"""Atomic, change-aware writes."""

import os

from promenade.fileio import SECRET_MODE, atomic_link, atomic_write


def test_parts_are_written_in_order_and_unchanged_content_is_left_alone(tmp_path):
    path = str(tmp_path / "sub" / "script.sh")
    assert atomic_write(path, [b"#!/bin/bash\n", b"payload\n" * 3], SECRET_MODE)
    assert open(path, "rb").read() == b"#!/bin/bash\n" + b"payload\n" * 3
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    stamp = os.stat(path).st_mtime_ns
    assert not atomic_write(path, b"#!/bin/bash\npayload\npayload\npayload\n", SECRET_MODE)  # same bytes, one part
    assert os.stat(path).st_mtime_ns == stamp
    assert atomic_write(path, [b"#!/bin/bash\n", b"payload\n" * 2, b"changed\n"], SECRET_MODE)
    assert open(path, "rb").read().endswith(b"changed\n")
    assert atomic_write(path, "short", SECRET_MODE) and open(path).read() == "short"
    assert [name for name in os.listdir(tmp_path / "sub") if name.startswith(".tmp-")] == []


def test_link_shares_the_file_and_replaces_the_old_one(tmp_path):
    source, path = str(tmp_path / "a"), str(tmp_path / "b")
    atomic_write(source, b"payload", SECRET_MODE)
    atomic_write(path, b"old", SECRET_MODE)
    assert atomic_link(source, path) and os.path.samefile(source, path)
    assert open(path, "rb").read() == b"payload"
    assert not atomic_link(source, path)
    assert sorted(os.listdir(tmp_path)) == ["a", "b"]
