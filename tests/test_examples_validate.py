"""The five real example sites render and pass validation, and validation is not a no-op on them."""

import pytest

from promenade.documents import check_envelopes, load_site, parse_stream
from promenade.rendering import render
from promenade.validation import validate

EXAMPLES = "/work/shared/examples/promenade"
SITES = ["basic", "complete", "containerd", "gate", "simple"]


def rendered(site):
    docs = load_site(f"{EXAMPLES}/{site}")
    assert check_envelopes(docs) == []
    return render(docs, strict=False).documents


@pytest.mark.parametrize("site", SITES)
def test_example_site_validates(site):
    docs = rendered(site)
    assert {doc.schema for doc in docs} >= {
        "promenade/Genesis/v1", "promenade/HostSystem/v1", "promenade/Kubelet/v1",
        "promenade/KubernetesNetwork/v1", "promenade/Docker/v1", "promenade/PKICatalog/v1"}
    assert validate(docs) == []


@pytest.mark.parametrize("site", SITES)
def test_example_site_with_a_mistake_is_rejected(site):
    docs = rendered(site)
    genesis = next(doc for doc in docs if doc.schema == "promenade/Genesis/v1")
    genesis.data["images"]["kubernetes"]["etcd"] = 3
    [problem] = validate(docs)
    assert (problem.file, problem.schema, problem.path) == (
        f"{EXAMPLES}/{site}/Genesis.yaml", "promenade/Genesis/v1", ".data.images.kubernetes.etcd")
    assert problem.line == genesis.line_of(["data", "images", "kubernetes", "etcd"]) > 1


def test_substituted_encryption_policy_is_validated():
    """basic/ substitutes EncryptionPolicy .etcd into Genesis .apiserver.encryption."""
    docs = rendered("basic")
    genesis = next(doc for doc in docs if doc.schema == "promenade/Genesis/v1")
    assert genesis.data["apiserver"]["encryption"][0]["resources"] == ["secrets"]
    del genesis.data["apiserver"]["encryption"][0]["providers"]
    [problem] = validate(docs)
    assert problem.path == ".data.apiserver.encryption[0].providers"


def test_site_data_schema_applies_after_rendering():
    docs = load_site(f"{EXAMPLES}/simple") + parse_stream(
        "schema: deckhand/DataSchema/v1\n"
        "metadata: {schema: metadata/Control/v1, name: promenade/Docker/v1}\n"
        "data: {properties: {config: {required: [storage-driver, log-driver]}}}\n", "ds.yaml")
    [problem] = validate(render(docs, strict=False).documents)
    assert (problem.file, problem.line, problem.path, problem.message) == (
        f"{EXAMPLES}/simple/Docker.yaml", 11, ".data.config.log-driver",
        "missing required key 'log-driver'")
