"""Loading site files: recursion, ordering, multi-document files, provenance."""

import os

import pytest

from promenade.documents import check_envelopes, load_site, parse_stream, site_files
from promenade.errors import PromenadeError


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)


def test_site_files_recursive_sorted_yaml_only(tmp_path):
    for rel in ["b/z.yaml", "a/y.yml", "a/x.yaml", "c.yaml", "notes.txt", ".hidden/h.yaml"]:
        write(tmp_path / rel, "")
    got = [os.path.relpath(p, tmp_path) for p in site_files(str(tmp_path))]
    assert got == ["a/x.yaml", "a/y.yml", "b/z.yaml", "c.yaml"]


def test_missing_site_dir_is_a_clear_error(tmp_path):
    with pytest.raises(PromenadeError, match="does not exist"):
        site_files(str(tmp_path / "nope"))


def test_multi_document_file_skips_empty_documents_and_keeps_lines():
    text = "---\n---\nschema: a/B/v1\nmetadata: {name: one}\ndata: 1\n---\n# only a comment\n---\n" \
           "schema: a/B/v1\nmetadata:\n  name: two\ndata:\n  x: [1, 2]\n"
    docs = parse_stream(text, "f.yaml")
    assert [(d.name, d.line) for d in docs] == [("one", 3), ("two", 9)]
    assert docs[1].line_of(["data", "x", 1]) == 13
    assert docs[1].line_of(["data", "missing", "deeper"]) == 12  # deepest existing ancestor


def test_problem_names_file_line_document_and_path():
    doc = parse_stream("schema: promenade/Genesis/v1\nmetadata:\n  name: g\ndata:\n  ip: nope\n", "g.yaml")[0]
    assert str(doc.problem("expected an IPv4 address", ["data", "ip"])) == \
        "g.yaml:5 [promenade/Genesis/v1 g] at .data.ip: expected an IPv4 address"


def test_yaml_syntax_errors_of_all_files_are_reported_together(tmp_path):
    write(tmp_path / "a.yaml", "schema: x/Y/v1\nmetadata: {name: a\n")
    write(tmp_path / "b.yaml", "key: [unclosed\n")
    with pytest.raises(PromenadeError) as err:
        load_site(str(tmp_path))
    files = sorted(os.path.basename(p.file) for p in err.value.problems)
    assert files == ["a.yaml", "b.yaml"]
    assert all("YAML syntax error" in p.message and p.line for p in err.value.problems)


def test_envelope_checks():
    text = ("- a list\n---\nmetadata: {name: x}\ndata: {}\n---\nschema: bad\nmetadata: {name: y}\n---\n"
            "schema: a/B/v1\nmetadata: {}\n---\nschema: a/B/v1\nmetadata: {name: z}\nextra: 1\n")
    problems = check_envelopes(parse_stream(text, "e.yaml"))
    messages = [(p.line, p.message.split(" ")[0]) for p in problems]
    assert messages == [(1, "document"), (3, '"schema"'), (6, "schema"), (10, "\"metadata.name\""),
                        (14, "unexpected")]
