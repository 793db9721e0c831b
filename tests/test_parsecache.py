"""The parse cache: an unchanged file is read back from JSON, never parsed twice, and loses nothing."""

import datetime
import os

import pytest

from promenade import parsecache
from promenade.documents import load_files, read_file
from promenade.errors import PromenadeError
from promenade.parsecache import ParseCache

SITE = """schema: promenade/KubernetesNode/v1
metadata: {name: n1, schema: metadata/Document/v1}
data:
  zeta: last key first
  hostname: n1
  ip: 192.168.77.11
---
schema: armada/Chart/v1
metadata: {name: odd, schema: metadata/Document/v1}
data:
  released: 2024-05-01
  ports: {80: http}
"""


def no_parsing(monkeypatch):
    def fail(data, path):
        raise AssertionError(f"{path} was parsed again")
    monkeypatch.setattr(parsecache, "parse_bytes", fail)


def test_unchanged_file_comes_back_from_the_cache_exactly(tmp_path, monkeypatch):
    site = tmp_path / "site.yaml"
    site.write_text(SITE)
    cache_dir = str(tmp_path / "cache")
    parsed = load_files([str(site)])
    assert load_files([str(site)], ParseCache(cache_dir).read) == parsed
    no_parsing(monkeypatch)
    cached = load_files([str(site)], ParseCache(cache_dir).read)  # a new process: nothing in memory
    assert [d.raw for d in cached] == [d.raw for d in parsed]
    assert list(cached[0].data) == ["zeta", "hostname", "ip"]  # the file's key order
    assert cached[1].data == {"released": datetime.date(2024, 5, 1), "ports": {80: "http"}}
    assert [(d.file, d.line) for d in cached] == [(str(site), 1), (str(site), 8)]
    (entry,) = os.listdir(cache_dir)
    assert oct(os.stat(os.path.join(cache_dir, entry)).st_mode & 0o777) == "0o600"


def test_lines_inside_cached_documents_are_exact(tmp_path, monkeypatch):
    site = tmp_path / "site.yaml"
    site.write_text(SITE)
    cache_dir = str(tmp_path / "cache")
    ParseCache(cache_dir).read(str(site))
    cached = ParseCache(cache_dir).read(str(site))
    assert cached[0].line_of(["data", "ip"]) == 6
    assert cached[1].line_of(["data", "ports", 80]) == 12
    assert cached[1].problem("bad", ["data", "released"]).line == 11


def test_a_changed_file_is_parsed_again_and_a_removed_one_forgotten(tmp_path, monkeypatch):
    site, other = tmp_path / "site.yaml", tmp_path / "other.yaml"
    site.write_text(SITE)
    other.write_text(SITE)
    cache = ParseCache(str(tmp_path / "cache"))
    load_files([str(site), str(other)], cache.read)
    site.write_text(SITE.replace("192.168.77.11", "192.168.77.12"))
    (changed, _), = [ParseCache(str(tmp_path / "cache")).read(str(site))]
    assert changed.data["ip"] == "192.168.77.12"
    no_parsing(monkeypatch)
    assert ParseCache(str(tmp_path / "cache")).read(str(site))[0].data["ip"] == "192.168.77.12"
    cache.prune([str(site)])
    assert os.listdir(tmp_path / "cache") == [os.path.basename(cache.entry(str(site)))]


def test_a_damaged_entry_is_ignored(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text(SITE)
    cache = ParseCache(str(tmp_path / "cache"))
    cache.read(str(site))
    with open(cache.entry(str(site)), "a", encoding="utf-8") as handle:
        handle.write('{"document": {"half')
    assert [d.raw for d in ParseCache(str(tmp_path / "cache")).read(str(site))] == [d.raw for d in read_file(str(site))]


def test_syntax_errors_are_not_cached(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text("schema: [unclosed\n")
    with pytest.raises(PromenadeError) as raised:
        ParseCache(str(tmp_path / "cache")).read(str(site))
    assert raised.value.problems[0].file == str(site)
    assert not (tmp_path / "cache").exists()
