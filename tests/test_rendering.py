"""Deckhand-compatible rendering: layering, replacement, substitution and their errors."""

from __future__ import annotations

import os
import textwrap

import pytest

from promenade.documents import load_site, parse_stream
from promenade.errors import PromenadeError
from promenade.paths import PathError, parse_path
from promenade.rendering import render

EXAMPLES = "/work/shared/examples/promenade"
KIND = "example/Kind/v1"
POLICY = """\
schema: deckhand/LayeringPolicy/v1
metadata:
  schema: metadata/Control/v1
  name: layering-policy
data:
  layerOrder: [global, region, site]
"""


def site(*docs: str, policy: str | None = POLICY) -> tuple[list, str]:
    """Parse the documents (preceded by the layering policy) as one file ``f.yaml``."""
    parts = ([policy] if policy else []) + [textwrap.dedent(d) for d in docs]
    text = "---\n" + "---\n".join(parts)
    return parse_stream(text, "f.yaml"), text


def line(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based line of the ``occurrence``-th line containing ``needle``."""
    hits = [n for n, content in enumerate(text.splitlines(), 1) if needle in content]
    return hits[occurrence - 1]


def rendered(docs, strict=True) -> dict:
    return {d.name: d.data for d in render(docs, strict).documents if d.schema != "deckhand/LayeringPolicy/v1"}


def failure(docs, strict=True) -> list:
    with pytest.raises(PromenadeError) as caught:
        render(docs, strict)
    return caught.value.problems


def doc(name: str, layer: str = "site", data: str = "{}", *, schema: str = KIND, labels: str = "",
        selector: str = "", actions: str = "", extra: str = "") -> str:
    """A document in block style; the optional parts are flow-style YAML mappings/lists."""
    text = f"schema: {schema}\nmetadata:\n  schema: metadata/Document/v1\n  name: {name}\n"
    if labels:
        text += f"  labels: {labels}\n"
    text += f"  layeringDefinition:\n    layer: {layer}\n"
    if selector:
        text += f"    parentSelector: {selector}\n    actions: {actions}\n"
    text += extra
    return text + f"data: {data}\n"


def sub(src_schema=KIND, src_name="source", src_path=".", dest="{path: .value}", **src_extra) -> str:
    extra = "".join(f", {k}: {v}" for k, v in src_extra.items())
    return (f"  substitutions:\n    - src: {{schema: {src_schema}, name: {src_name}, path: '{src_path}'{extra}}}\n"
            f"      dest: {dest}\n")


# --- LayeringPolicy, layers, duplicates -------------------------------------------------------

def test_layering_policy_is_required():
    docs, _ = site(doc("a"), policy=None)
    [problem] = failure(docs)
    assert "deckhand/LayeringPolicy/v1" in problem.message and "none was found" in problem.message


def test_first_of_several_layering_policies_is_used_with_warning():
    second = POLICY.replace("layering-policy", "other-policy").replace("[global, region, site]", "[site]")
    docs, text = site(second, doc("g", "global"))
    result = render(docs)
    [warning] = result.warnings
    assert warning.severity == "warning" and warning.name == "other-policy"
    assert warning.line == line(text, "schema: deckhand/LayeringPolicy/v1", 2)
    assert "g" in {d.name for d in result.documents}  # 'global' came from the first policy


def test_layering_policy_needs_a_layer_order():
    docs, _ = site(doc("a"), policy="schema: deckhand/LayeringPolicy/v1\nmetadata:\n"
                                       "  schema: metadata/Control/v1\n  name: lp\ndata:\n  order: [site]\n")
    problems = failure(docs)
    assert any("layerOrder" in p.message and p.name == "lp" for p in problems)


def test_empty_layer_order_makes_every_layer_unknown():
    docs, _ = site(doc("a"), policy=POLICY.replace("[global, region, site]", "[]"))
    [problem] = failure(docs)
    assert problem.name == "a" and problem.path == ".metadata.layeringDefinition.layer"


def test_unknown_layer_is_an_error_naming_file_line_document_and_path():
    docs, text = site(doc("a", "planet"))
    [problem] = failure(docs)
    assert (problem.file, problem.line) == ("f.yaml", line(text, "layer: planet"))
    assert (problem.schema, problem.name, problem.path) == (KIND, "a", ".metadata.layeringDefinition.layer")
    assert "'planet'" in problem.message and "global, region, site" in problem.message


def test_duplicate_schema_layer_name_is_an_error():
    docs, text = site(doc("a", data="{x: 1}"), doc("a", data="{x: 2}"))
    [problem] = failure(docs)
    assert "duplicate" in problem.message
    assert problem.line == line(text, "schema: example", 2)


def test_same_schema_and_name_in_two_layers_without_replacement_is_an_error():
    docs, text = site(doc("a", "global"), doc("a", "site"))
    [problem] = failure(docs)
    assert problem.name == "a" and problem.line == line(text, "schema: example", 2)
    assert "replacement" in problem.message


# --- envelope and metadata checks -------------------------------------------------------------

def test_envelope_problems_are_reported_first():
    docs, text = site(doc("a") + "extra: 1\n")
    [problem] = failure(docs)
    assert problem.path == ".extra" and problem.line == line(text, "extra: 1")


@pytest.mark.parametrize("extra, path, needle", [
    ("  storagePolicy: plaintext\n", ".metadata.storagePolicy", "storagePolicy"),
    ("  owner: me\n", ".metadata", "metadata:"),
    ("  substitutions:\n    - src: {schema: a/B/v1, name: b}\n      dest: {path: .x}\n",
     ".metadata.substitutions[0].src", "- src:"),
    ("  substitutions:\n    - src: {schema: a/B/v1, name: b, path: .}\n      dest: [{pattern: x}]\n",
     ".metadata.substitutions[0].dest[0]", "dest:"),
])
def test_invalid_metadata_is_located(extra, path, needle):
    docs, text = site(doc("a", extra=extra))
    [problem] = failure(docs)
    assert (problem.name, problem.path) == ("a", path)
    assert problem.line == line(text, needle, 2 if needle == "metadata:" else 1)


def test_metadata_errors_are_reported_for_every_document_with_them():
    bad = "  storagePolicy: plaintext\n"
    docs, _ = site(doc("a"), doc("b", extra=bad), doc("c"), doc("d", extra=bad))
    assert [p.name for p in failure(docs)] == ["b", "d"]


def test_parent_selector_requires_actions_and_known_methods():
    docs, _ = site(doc("a", selector="{x: y}", actions="[{method: squash, path: .}]"),
                   doc("b", "region", selector="{x: y}", actions="[]"))
    problems = failure(docs)
    assert {p.path for p in problems} == {".metadata.layeringDefinition.actions[0].method",
                                          ".metadata.layeringDefinition.actions"}


def test_document_needs_a_layer_but_storage_policy_and_metadata_schema_are_optional():
    docs, _ = site("schema: a/B/v1\nmetadata: {name: plain, layeringDefinition: {layer: site}}\ndata: 1\n",
                   "schema: a/B/v1\nmetadata: {schema: metadata/Document/v1, name: nolayer}\ndata: 2\n")
    [problem] = failure(docs)
    assert problem.name == "nolayer" and "layeringDefinition" in problem.message


def test_all_problems_are_collected():
    docs, _ = site(doc("a", "planet"), doc("b", "moon"))
    assert {p.name for p in failure(docs)} == {"a", "b"}


# --- parent selection -------------------------------------------------------------------------

def test_child_merges_onto_parent_found_by_labels():
    docs, _ = site(doc("parent", "global", "{a: 1, b: {c: 2}}", labels="{role: base}"),
                   doc("child", "site", "{b: {d: 3}}", selector="{role: base}",
                       actions="[{method: merge, path: .}]"))
    assert rendered(docs)["child"] == {"a": 1, "b": {"c": 2, "d": 3}}


def test_nearest_layer_parent_wins():
    docs, _ = site(doc("g", "global", "{who: global}", labels="{role: base}"),
                   doc("r", "region", "{who: region}", labels="{role: base}"),
                   doc("child", "site", "{}", selector="{role: base}", actions="[{method: merge, path: .}]"))
    assert rendered(docs)["child"] == {"who": "region"}


def test_layering_chains_through_every_layer():
    docs, _ = site(doc("g", "global", "{a: g, b: g, c: g}", labels="{level: g}"),
                   doc("r", "region", "{b: r, c: r}", labels="{level: r}", selector="{level: g}",
                       actions="[{method: merge, path: .}]"),
                   doc("s", "site", "{c: s}", selector="{level: r}", actions="[{method: merge, path: .}]"))
    assert rendered(docs)["s"] == {"a": "g", "b": "r", "c": "s"}


def test_grandparent_is_used_when_the_layer_between_has_no_match():
    docs, _ = site(doc("g", "global", "{who: global}", labels="{role: base}"),
                   doc("r", "region", "{who: region}", labels="{role: other}"),
                   doc("child", "site", "{}", selector="{role: base}", actions="[{method: merge, path: .}]"))
    assert rendered(docs)["child"] == {"who": "global"}


def test_selector_must_be_contained_in_labels():
    docs, _ = site(doc("g", "global", "{who: g}", labels="{role: base, zone: a}"),
                   doc("r", "region", "{who: r}", labels="{role: base, zone: b}"),
                   doc("child", "site", "{}", selector="{role: base, zone: a}",
                       actions="[{method: merge, path: .}]"))
    assert rendered(docs)["child"] == {"who": "g"}


def test_two_parents_in_the_nearest_layer_is_ambiguous():
    docs, text = site(doc("p1", "global", labels="{role: base}"), doc("p2", "global", labels="{role: base}"),
                      doc("child", "site", selector="{role: base}", actions="[{method: merge, path: .}]"))
    [problem] = failure(docs)
    assert problem.name == "child" and problem.path == ".metadata.layeringDefinition.parentSelector"
    assert problem.line == line(text, "parentSelector")
    assert f"{KIND} p1 (f.yaml:" in problem.message and f"{KIND} p2 (f.yaml:" in problem.message


def test_parent_with_a_different_schema_is_an_error():
    docs, _ = site(doc("p", "global", labels="{role: base}", schema="other/Kind/v1"),
                   doc("child", "site", selector="{role: base}", actions="[{method: merge, path: .}]"))
    [problem] = failure(docs)
    assert problem.name == "child" and "different schema" in problem.message


@pytest.mark.parametrize("parent_layer", ["site", "region"])
def test_parent_in_same_or_lower_layer_is_an_error(parent_layer):
    docs, _ = site(doc("p", parent_layer, labels="{role: base}"),
                   doc("child", "region", selector="{role: base}", actions="[{method: merge, path: .}]"))
    [problem] = failure(docs)
    assert problem.name == "child" and "not above" in problem.message


def test_no_parent_found_renders_the_document_as_is_with_a_warning():
    docs, _ = site(doc("child", "site", "{own: 1}", selector="{role: missing}",
                       actions="[{method: delete, path: .own}]"))
    result = render(docs)
    assert [d.data for d in result.documents if d.name == "child"] == [{"own": 1}]
    assert [w.path for w in result.warnings] == [".metadata.layeringDefinition.parentSelector"]


def test_abstract_documents_are_layered_onto_but_not_returned():
    docs, _ = site(doc("base", "global", "{a: 1}", labels="{role: base}",
                       extra="").replace("layer: global", "layer: global\n    abstract: true"),
                   doc("child", "site", "{b: 2}", selector="{role: base}", actions="[{method: merge, path: .}]"))
    assert rendered(docs) == {"child": {"a": 1, "b": 2}}


# --- actions ----------------------------------------------------------------------------------

def layered(parent_data: str, child_data: str, actions: str):
    return site(doc("parent", "global", parent_data, labels="{role: base}"),
                doc("child", "site", child_data, selector="{role: base}", actions=actions))


def test_merge_is_deep_child_wins_and_lists_are_replaced():
    docs, _ = layered("{a: {x: 1, y: [1, 2]}, keep: k}", "{a: {y: [3], z: 4}}", "[{method: merge, path: .}]")
    assert rendered(docs)["child"] == {"a": {"x": 1, "y": [3], "z": 4}, "keep": "k"}


def test_merge_at_a_path_only_takes_that_subtree_from_the_child():
    docs, _ = layered("{a: {x: 1}, b: 1}", "{a: {y: 2}, b: 2}", "[{method: merge, path: .a}]")
    assert rendered(docs)["child"] == {"a": {"x": 1, "y": 2}, "b": 1}


def test_merge_with_list_index_merges_that_element_and_keeps_the_others():
    docs, _ = layered("{a: [{x: 1}, {x: 2}]}", "{a: [{y: 9}]}", "[{method: merge, path: '.a[0]'}]")
    assert rendered(docs)["child"] == {"a": [{"x": 1, "y": 9}, {"x": 2}]}


def test_merge_of_incompatible_types_takes_the_child_value():
    docs, _ = layered("{a: {x: 1}}", "{a: text}", "[{method: merge, path: .a}]")
    assert rendered(docs)["child"] == {"a": "text"}


def test_merge_of_primitive_data_takes_the_child_data():
    docs, _ = layered("{a: 1}", "42", "[{method: merge, path: .}]")
    assert rendered(docs)["child"] == 42


def test_merge_path_missing_in_child_is_an_error():
    docs, text = layered("{a: 1}", "{b: 2}", "[{method: merge, path: .a}]")
    [problem] = failure(docs)
    assert problem.name == "child" and problem.path == ".metadata.layeringDefinition.actions[0].path"
    assert problem.line == line(text, "actions:") and "does not exist in this document" in problem.message


def test_replace_sets_the_child_subtree_and_can_add_keys():
    docs, _ = layered("{a: {x: 1}, b: 1}", "{a: {y: 2}, c: 3}",
                      "[{method: replace, path: .a}, {method: replace, path: .c}]")
    assert rendered(docs)["child"] == {"a": {"y": 2}, "b": 1, "c": 3}


def test_replace_path_missing_in_child_is_an_error():
    docs, _ = layered("{a: 1}", "{}", "[{method: replace, path: .a}]")
    [problem] = failure(docs)
    assert problem.path == ".metadata.layeringDefinition.actions[0].path"


def test_delete_removes_paths_from_the_parent_data():
    docs, _ = layered("{a: {x: 1, y: 2}, b: [1, 2, 3]}", "{}",
                      "[{method: delete, path: .a.x}, {method: delete, path: '.b[1]'}]")
    assert rendered(docs)["child"] == {"a": {"y": 2}, "b": [1, 3]}


def test_delete_everything():
    docs, _ = layered("{a: 1}", "{}", "[{method: delete, path: .}]")
    assert rendered(docs)["child"] == {}


def test_delete_of_a_missing_path_is_an_error():
    docs, _ = layered("{a: 1}", "{}", "[{method: delete, path: .b}]")
    [problem] = failure(docs)
    assert "does not exist in the parent" in problem.message


def test_delete_removes_the_named_path_not_an_equal_value_elsewhere():
    docs, _ = layered("{a: {x: 1}, b: {x: 1}}", "{}", "[{method: delete, path: .b.x}]")
    assert rendered(docs)["child"] == {"a": {"x": 1}, "b": {}}


@pytest.mark.parametrize("actions, expected", [
    ("[{method: merge, path: .}, {method: replace, path: .a}]", {"a": {"y": 2}, "b": 3}),
    ("[{method: replace, path: .a}, {method: merge, path: .}]", {"a": {"y": 2}, "b": 3}),
    ("[{method: replace, path: .a}, {method: delete, path: .b}]", {"a": {"y": 2}}),
    ("[{method: delete, path: .a}, {method: merge, path: .a}]", {"a": {"y": 2}, "b": 1}),
])
def test_actions_apply_in_order(actions, expected):
    docs, _ = layered("{a: {x: 1}, b: 1}", "{a: {y: 2}, b: 3}", actions)
    assert rendered(docs)["child"] == expected


@pytest.mark.parametrize("path", [".data.a", "$.data.a", "a", "$.a"])
def test_action_paths_may_start_with_data(path):
    docs, _ = layered("{a: 1, b: 2}", "{}", f"[{{method: delete, path: '{path}'}}]")
    assert rendered(docs)["child"] == {"b": 2}


def test_action_path_starting_with_database_is_a_key_not_the_data_prefix():
    docs, _ = layered("{database: 1, b: 2}", "{}", "[{method: delete, path: .database}]")
    assert rendered(docs)["child"] == {"b": 2}


def test_quoted_keys_in_action_paths():
    docs, _ = layered("{'filter:authtoken': {password: old, user: u}}", "{'filter:authtoken': {password: new}}",
                      """[{method: merge, path: ".'filter:authtoken'.password"}]""")
    assert rendered(docs)["child"] == {"filter:authtoken": {"password": "new", "user": "u"}}


# --- replacement ------------------------------------------------------------------------------

def test_replacement_replaces_its_parent_for_output_sources_and_other_children():
    replacement = "  replacement: true\n"
    docs, _ = site(doc("a", "global", "{v: global, keep: 1}", labels="{role: a}"),
                   doc("a", "site", "{v: site}", selector="{role: a}", actions="[{method: merge, path: .}]",
                       extra=replacement),
                   doc("other", "region", "{}", selector="{role: a}", actions="[{method: merge, path: .}]"),
                   doc("user", "site", "{}", extra=sub(src_name="a", src_path=".v")))
    result = render(docs).documents
    assert [(d.name, d.data) for d in result if d.schema == KIND] == [
        ("a", {"v": "site", "keep": 1}), ("other", {"v": "site", "keep": 1}), ("user", {"value": "site"})]


def test_replacement_needs_a_parent():
    docs, _ = site(doc("a", "site", "{}", extra="  replacement: true\n"))
    [problem] = failure(docs)
    assert problem.path == ".metadata.replacement" and "needs a parent" in problem.message


def test_replacement_needs_the_same_name_as_its_parent():
    docs, _ = site(doc("a", "global", labels="{role: a}"),
                   doc("b", "site", selector="{role: a}", actions="[{method: merge, path: .}]",
                       extra="  replacement: true\n"))
    [problem] = failure(docs)
    assert problem.name == "b" and "same schema and name" in problem.message


def test_a_replacement_cannot_be_replaced_again():
    docs, _ = site(doc("a", "global", labels="{role: a}"),
                   doc("a", "region", labels="{role: a}", selector="{role: a}",
                       actions="[{method: merge, path: .}]", extra="  replacement: true\n"),
                   doc("a", "site", selector="{role: a}", actions="[{method: merge, path: .}]",
                       extra="  replacement: true\n"))
    problems = failure(docs)
    assert any("cannot be replaced again" in p.message and p.path == ".metadata.replacement" for p in problems)


# --- substitution -----------------------------------------------------------------------------

def source(data: str, name: str = "source", extra: str = "") -> str:
    return doc(name, "site", data, extra=extra)


def test_substitution_copies_source_path_to_dest_path():
    docs, _ = site(source("{a: {b: secret}}"), doc("dest", data="{other: 1}", extra=sub(src_path=".a.b")))
    assert rendered(docs)["dest"] == {"other": 1, "value": "secret"}


def test_non_mapping_source_data_is_used_whole():
    docs, _ = site(source("'-----BEGIN CERTIFICATE-----'"), doc("dest", extra=sub(src_path=".ignored")))
    assert rendered(docs)["dest"] == {"value": "-----BEGIN CERTIFICATE-----"}


def test_source_pattern_and_match_group():
    docs, _ = site(source("{url: 'http://user:pw@host:80/'}"),
                   doc("dest", extra=sub(src_path=".url", pattern="'user:(\\w+)@'", match_group=1)))
    assert rendered(docs)["dest"] == {"value": "pw"}


def test_source_pattern_without_match_warns_and_uses_the_whole_value():
    docs, _ = site(source("{url: plain}"), doc("dest", extra=sub(src_path=".url", pattern="'x+'")))
    result = render(docs)
    assert [d.data for d in result.documents if d.name == "dest"] == [{"value": "plain"}]
    assert [w.path for w in result.warnings] == [".metadata.substitutions[0].src.pattern"]


def test_source_pattern_on_a_non_string_is_an_error():
    docs, _ = site(source("{n: 5}"), doc("dest", extra=sub(src_path=".n", pattern="'5'")))
    [problem] = failure(docs)
    assert problem.path == ".metadata.substitutions[0].src.pattern"


def test_dest_list_fans_out_independent_copies():
    docs, _ = site(source("{v: {k: 1}}"),
                   doc("dest", extra=sub(src_path=".v", dest="[{path: .a}, {path: .b}]")))
    result = [d for d in render(docs).documents if d.name == "dest"][0].data
    assert result == {"a": {"k": 1}, "b": {"k": 1}} and result["a"] is not result["b"]


def test_dest_path_creates_mappings_and_pads_lists():
    docs, _ = site(source("'PEM'"), doc("dest", data="{values: {nodes: [{name: n0}]}}",
                                        extra=sub(dest="{path: '.values.nodes[2].tls.client.cert'}")))
    assert rendered(docs)["dest"] == {"values": {"nodes": [{"name": "n0"}, {}, {"tls": {"client": {"cert": "PEM"}}}]}}


def test_dest_path_with_quoted_key_and_dollar_prefix():
    docs, _ = site(source("{p: pw}"), doc("dest", extra=sub(src_path="$.p", dest="""{path: "$.conf.'filter:authtoken'.password"}""")))
    assert rendered(docs)["dest"] == {"conf": {"filter:authtoken": {"password": "pw"}}}


@pytest.mark.parametrize("value, expected", [
    ("'s3cr\\1t'", "url://s3cr\\1t@x/s3cr\\1t"), ("123", "url://123@x/123"),
    ("false", "url://False@x/False"), ("null", "url://None@x/None"),
])
def test_dest_pattern_replaces_every_occurrence_with_the_string_value(value, expected):
    docs, _ = site(source(f"{{v: {value}}}"),
                   doc("dest", data="{url: 'url://PW@x/PW'}", extra=sub(src_path=".v", dest="{path: .url, pattern: PW}")))
    assert rendered(docs)["dest"] == {"url": expected}


@pytest.mark.parametrize("data", ["{}", "{url: {nested: PW}}"])
def test_dest_pattern_needs_an_existing_string(data):
    docs, _ = site(source("{v: x}"), doc("dest", data=data, extra=sub(src_path=".v", dest="{path: .url, pattern: PW}")))
    [problem] = failure(docs)
    assert problem.path == ".metadata.substitutions[0].dest.path" and "existing string" in problem.message


@pytest.mark.parametrize("depth, expected", [
    (-1, {"a": "X-1", "b": {"c": "X-2", "d": ["X-3", {"e": "X-4"}]}, "f": "no pattern"}),
    (1, {"a": "X-1", "b": {"c": "PW-2", "d": ["PW-3", {"e": "PW-4"}]}, "f": "no pattern"}),
    (2, {"a": "X-1", "b": {"c": "X-2", "d": ["PW-3", {"e": "PW-4"}]}, "f": "no pattern"}),
])
def test_dest_recurse_replaces_strings_containing_the_pattern_up_to_depth(depth, expected):
    data = "{a: PW-1, b: {c: PW-2, d: [PW-3, {e: PW-4}]}, f: no pattern}"
    docs, _ = site(source("{v: X}"), doc("dest", data=f"{{top: {data}}}", extra=sub(
        src_path=".v", dest=f"{{path: .top, pattern: PW, recurse: {{depth: {depth}}}}}")))
    assert rendered(docs)["dest"] == {"top": expected}


def test_dest_recurse_only_touches_strings_containing_the_pattern_literally():
    docs, _ = site(source("{v: X}"), doc("dest", data="{top: {a: P1, b: 'P.'}}", extra=sub(
        src_path=".v", dest="{path: .top, pattern: 'P.', recurse: {depth: -1}}")))
    assert rendered(docs)["dest"] == {"top": {"a": "P1", "b": "X"}}


def test_dest_recurse_on_a_string_is_a_plain_pattern_replacement():
    docs, _ = site(source("{v: X}"), doc("dest", data="{top: a-PW}", extra=sub(
        src_path=".v", dest="{path: .top, pattern: PW, recurse: {depth: 1}}")))
    assert rendered(docs)["dest"] == {"top": "a-X"}


def test_substitution_chains_are_rendered_in_dependency_order():
    docs, _ = site(doc("c", extra=sub(src_name="b", src_path=".value")),
                   doc("b", extra=sub(src_name="a", src_path=".v")),
                   doc("a", data="{v: root}"))
    assert rendered(docs) == {"c": {"value": "root"}, "b": {"value": "root"}, "a": {"v": "root"}}


def test_layered_result_is_what_consumers_see_and_substitution_follows_layering():
    docs, _ = site(doc("parent", "global", "{v: parent, w: parent}", labels="{role: p}"),
                   doc("child", "site", "{w: child}", selector="{role: p}", actions="[{method: merge, path: .}]",
                       extra=sub(src_name="src", src_path=".v", dest="{path: .v}")),
                   source("{v: substituted}", name="src"),
                   doc("consumer", extra=sub(src_name="child", src_path=".")))
    result = rendered(docs)
    assert result["child"] == {"v": "substituted", "w": "child"}
    assert result["consumer"] == {"value": {"v": "substituted", "w": "child"}}


def test_substitution_cycle_is_an_error_naming_the_documents():
    docs, _ = site(doc("a", extra=sub(src_name="b")), doc("b", extra=sub(src_name="a")))
    [problem] = failure(docs)
    assert "cycle" in problem.message and f"{KIND} a (f.yaml:" in problem.message
    assert f"{KIND} b (f.yaml:" in problem.message


def test_self_reference_is_a_cycle():
    docs, text = site(doc("a", extra=sub(src_name="a")))
    [problem] = failure(docs)
    assert "cycle" in problem.message and problem.name == "a" and problem.line == line(text, "substitutions")


def test_cycle_through_layering_is_an_error():
    parent = doc("p", "global", "{}", labels="{role: p}", extra=sub(src_name="c", src_path=".x", dest="{path: .x}"))
    docs, _ = site(parent, doc("c", "site", "{x: 1}", selector="{role: p}", actions="[{method: merge, path: .}]"))
    [problem] = failure(docs)
    assert "cycle" in problem.message
    assert f"{KIND} p (f.yaml:" in problem.message and f"{KIND} c (f.yaml:" in problem.message


def test_problems_in_a_dest_list_name_the_entry():
    docs, _ = site(source("{v: x}"), doc("dest", data="{a: PW}",
                                         extra=sub(src_path=".v", dest="[{path: .a, pattern: PW}, {path: .b, pattern: PW}]")))
    [problem] = failure(docs)
    assert problem.path == ".metadata.substitutions[0].dest[1].path"


def test_missing_source_is_an_error_in_strict_mode():
    docs, text = site(doc("dest", extra=sub(src_name="nowhere")))
    [problem] = failure(docs)
    assert (problem.file, problem.line) == ("f.yaml", line(text, "- src:"))
    assert (problem.schema, problem.name, problem.path) == (KIND, "dest", ".metadata.substitutions[0].src.name")
    assert "nowhere" in problem.message


def test_missing_source_is_a_warning_in_lenient_mode_and_skipped():
    docs, _ = site(doc("dest", data="{value: old}", extra=sub(src_name="nowhere")))
    result = render(docs, strict=False)
    assert [d.data for d in result.documents if d.name == "dest"] == [{"value": "old"}]
    [warning] = result.warnings
    assert warning.severity == "warning" and warning.path == ".metadata.substitutions[0].src.name"


def test_missing_source_path_is_an_error_in_strict_mode():
    docs, _ = site(source("{a: 1}"), doc("dest", extra=sub(src_path=".b")))
    [problem] = failure(docs)
    assert problem.path == ".metadata.substitutions[0].src.path"


def test_missing_source_path_sets_null_with_a_warning_in_lenient_mode():
    docs, _ = site(source("{a: 1}"), doc("dest", data="{value: old}", extra=sub(src_path=".b")))
    result = render(docs, strict=False)
    assert [d.data for d in result.documents if d.name == "dest"] == [{"value": None}]
    assert [w.path for w in result.warnings] == [".metadata.substitutions[0].src.path"]


def test_dest_that_cannot_be_created_is_an_error_when_strict_and_a_warning_when_lenient():
    docs, _ = site(source("{a: 1}"), doc("dest", data="{value: text}", extra=sub(src_path=".a", dest="{path: .value.x}")))
    [problem] = failure(docs)
    assert problem.path == ".metadata.substitutions[0].dest.path"
    assert [w.path for w in render(docs, strict=False).warnings] == [".metadata.substitutions[0].dest.path"]


def test_abstract_documents_are_never_sources():
    docs, _ = site(source("{a: 1}").replace("layer: site", "layer: site\n    abstract: true"),
                   doc("dest", extra=sub(src_path=".a")))
    [problem] = failure(docs)
    assert "abstract" in problem.message


def test_abstract_documents_receive_substitutions_for_their_children():
    base = doc("base", "global", "{}", labels="{role: b}", extra=sub(src_path=".a", dest="{path: .a}"))
    docs, _ = site(base.replace("layer: global", "layer: global\n    abstract: true"), source("{a: 1}"),
                   doc("child", selector="{role: b}", actions="[{method: merge, path: .}]"))
    assert rendered(docs) == {"source": {"a": 1}, "child": {"a": 1}}


def test_substitution_never_alters_the_source_or_the_input():
    docs, _ = site(source("{a: {b: [1]}}"), doc("dest", extra=sub(src_path=".a")))
    before = [d.raw.copy() for d in docs]
    result = render(docs)
    dest = [d for d in result.documents if d.name == "dest"][0]
    dest.data["value"]["b"].append(2)
    assert [d.data for d in result.documents if d.name == "source"] == [{"a": {"b": [1]}}]
    assert [d.raw for d in docs] == before and docs[2].data == {}
    assert all(r is not d for r in result.documents for d in docs)


def test_encrypted_source_makes_the_destination_encrypted():
    secret = source("'key'", extra="  storagePolicy: encrypted\n")
    docs, _ = site(secret, doc("dest", extra="  storagePolicy: cleartext\n" + sub()), doc("plain"))
    policies = {d.name: d.metadata.get("storagePolicy") for d in render(docs).documents}
    assert policies == {"layering-policy": None, "source": "encrypted", "dest": "encrypted", "plain": None}


def test_bad_dest_path_syntax_is_located():
    docs, _ = site(source("{a: 1}"), doc("dest", extra=sub(src_path=".a", dest="{path: 'value'}")))
    [problem] = failure(docs)
    assert problem.path == ".metadata.substitutions[0].dest.path" and "must start with" in problem.message


# --- output -----------------------------------------------------------------------------------

def test_control_documents_are_returned_and_provenance_kept():
    data_schema = ("schema: deckhand/DataSchema/v1\nmetadata: {schema: metadata/Control/v1, name: example/Kind/v1}\n"
                   "data: {type: object}\n")
    docs, text = site(data_schema, doc("a"))
    result = render(docs).documents
    assert [(d.schema, d.file, d.line) for d in result] == [
        ("deckhand/LayeringPolicy/v1", "f.yaml", 2), ("deckhand/DataSchema/v1", "f.yaml", line(text, "DataSchema")),
        (KIND, "f.yaml", line(text, "schema: example"))]
    assert result[2].line_of(["metadata", "name"]) == line(text, "name: a")


@pytest.mark.parametrize("path, parts", [
    (".", ()), ("$", ()), (".a.b", ("a", "b")), ("$.a[0].b", ("a", 0, "b")), (".a[10][2]", ("a", 10, 2)),
    (".'x:y'.z", ("x:y", "z")), ('."x.y"', ("x.y",)), (".a['b c']", ("a", "b c")), (".controller-manager", ("controller-manager",)),
])
def test_path_syntax(path, parts):
    assert parse_path(path) == parts


@pytest.mark.parametrize("path", ["", "a.b", ".a[x]", ".a..b", ".'open"])
def test_invalid_paths_are_rejected(path):
    with pytest.raises(PathError):
        parse_path(path)


# --- the shipped example sites ----------------------------------------------------------------

@pytest.mark.parametrize("name", ["basic", "complete", "containerd", "gate", "simple"])
def test_example_sites_render_leniently(name):
    docs = load_site(os.path.join(EXAMPLES, name))
    result = render(docs, strict=False)
    assert len(result.documents) == len(docs)  # no abstract or replaced documents in the examples
    assert result.warnings and all(w.severity == "warning" and "deckhand/" in w.message for w in result.warnings)
    with pytest.raises(PromenadeError):  # the certificates do not exist yet
        render(docs, strict=True)
    by_key = {d.key: d for d in result.documents}
    policy = by_key.get(("promenade/EncryptionPolicy/v1", "encryption-policy"))
    genesis = by_key[("promenade/Genesis/v1", "genesis")]
    if genesis.metadata.get("substitutions"):
        assert genesis.data["apiserver"]["encryption"] == policy.data["etcd"]
    charts = [d for d in result.documents
              if "encryption_provider" in str(d.metadata.get("substitutions", ""))]
    for chart in charts:
        assert chart.data["values"]["conf"]["encryption_provider"]["content"]["resources"] == policy.data["etcd"]
    assert (name in {"basic", "containerd", "gate"}) == bool(genesis.metadata.get("substitutions"))
