"""Rendered sites with certificates, for tests of the config layer and the role templates.

The documents go through the same steps as ``doit build``: lenient render of the site,
certificates from its PKICatalog (``promenade.pki``), strict render of site + certificates.
"""

from __future__ import annotations

import functools
import os

from promenade import pki
from promenade.config import PKI_CATALOG
from promenade.documents import Document, load_files, parse_stream, site_files
from promenade.rendering import render

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SITE = os.path.join(REPO, "site")


def certificates(site_docs: list[Document]) -> list[Document]:
    """Every CA, certificate and key pair the site's PKICatalogs define (ECDSA keys: fast)."""
    catalogs = [doc.copy() for doc in site_docs if doc.schema == PKI_CATALOG]
    for catalog in catalogs:
        catalog.data["key_algorithm"] = "ecdsa-p256"
    requests, locations = pki.plan(catalogs, site_docs)
    text = pki.certificates_yaml(pki.fulfil_all(requests, locations))
    return parse_stream(text, "certificates.yaml")


def rendered(paths: list[str]) -> list[Document]:
    """Site files ``paths`` rendered strictly together with their generated certificates."""
    site_docs = render(load_files(paths), strict=False).documents
    return render(load_files(paths) + certificates(site_docs), strict=True).documents


@functools.lru_cache(maxsize=None)
def _embedded() -> tuple[Document, ...]:
    return tuple(rendered(site_files(SITE)))


def embedded_site() -> list[Document]:
    """The embedded site, rendered with certificates (generated once per test session)."""
    return [doc.copy() for doc in _embedded()]
