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


def nodes(count, ip_of=lambda i: f"10.0.0.{i}"):
    return "".join(f"---\nschema: promenade/KubernetesNode/v1\nmetadata: {{name: n{i}}}\n"
                   f"data:\n  hostname: n{i}\n  ip: {ip_of(i)}\n" for i in range(count))


def parsed_texts(monkeypatch):
    texts = []
    real = parsecache.parse_stream

    def spy(text, path=None):
        texts.append(text)
        return real(text, path)
    monkeypatch.setattr(parsecache, "parse_stream", spy)
    return texts


def test_one_changed_document_is_the_only_one_parsed(tmp_path, monkeypatch):
    site = tmp_path / "nodes.yaml"
    site.write_text(nodes(12))
    ParseCache(str(tmp_path / "cache")).read(str(site))
    grown = nodes(12).replace("  ip: 10.0.0.3\n", "  ip: 10.0.0.33\n  labels:\n    extra: 'yes'\n")
    site.write_text(grown)
    texts = parsed_texts(monkeypatch)
    docs = ParseCache(str(tmp_path / "cache")).read(str(site))
    assert len(texts) == 1 and texts[0].strip().endswith("extra: 'yes'") and "n4" not in texts[0]
    assert docs == read_file(str(site))  # same documents and first lines (n4 onwards moved down)
    assert docs[5].line_of(["data", "ip"]) == read_file(str(site))[5].line_of(["data", "ip"])
    assert ParseCache(str(tmp_path / "cache")).read(str(site)) == docs and len(texts) == 1


def test_many_changes_duplicates_and_directives_parse_the_whole_file(tmp_path, monkeypatch):
    site = tmp_path / "nodes.yaml"
    site.write_text(nodes(8))
    ParseCache(str(tmp_path / "cache")).read(str(site))
    texts = parsed_texts(monkeypatch)
    site.write_text(nodes(8, ip_of=lambda i: f"10.0.1.{i}"))
    assert [d.data["ip"] for d in ParseCache(str(tmp_path / "cache")).read(str(site))][-1] == "10.0.1.7"
    assert len(texts) == 1 and texts[0] == site.read_text()
    twice = nodes(8, ip_of=lambda i: f"10.0.1.{i}") + nodes(1, ip_of=lambda i: "10.0.1.0")
    site.write_text(twice)  # the last document repeats the first one's text
    assert ParseCache(str(tmp_path / "cache")).read(str(site)) == read_file(str(site))
    site.write_text("%YAML 1.1\n" + twice.replace("---", "---", 1) + "...\n")
    assert ParseCache(str(tmp_path / "cache")).read(str(site)) == read_file(str(site))


def test_a_syntax_error_in_a_changed_document_reads_as_without_the_cache(tmp_path):
    site = tmp_path / "nodes.yaml"
    site.write_text(nodes(8))
    ParseCache(str(tmp_path / "cache")).read(str(site))
    site.write_text(nodes(8).replace("  ip: 10.0.0.5\n", "  ip: [10.0.0.5\n"))
    with pytest.raises(PromenadeError) as cached:
        ParseCache(str(tmp_path / "cache")).read(str(site))
    with pytest.raises(PromenadeError) as plain:
        read_file(str(site))
    assert cached.value.report() == plain.value.report()
