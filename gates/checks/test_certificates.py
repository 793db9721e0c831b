"""Certificates on a node chain to the site's CAs and name that node (hostname and address)."""

import ipaddress

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature


def _sans(cert):
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set(), set()
    return set(ext.get_values_for_type(x509.DNSName)), {str(ip) for ip in ext.get_values_for_type(x509.IPAddress)}


def test_certificates_chain_to_site_ca_with_node_sans(host, node, gate):
    if not node["certificates"]:
        pytest.skip(f"the scenario lists no certificates for role {node['role']}")
    problems = []
    for spec in node["certificates"]:
        pem = host.file(spec["path"]).content
        cert = x509.load_pem_x509_certificate(pem)
        ca = x509.load_pem_x509_certificate(gate["cas"][spec["ca"]].encode())
        try:
            cert.verify_directly_issued_by(ca)
        except (InvalidSignature, ValueError, TypeError) as exc:
            problems.append(f"{spec['path']}: not issued by CA {spec['ca']} ({type(exc).__name__})")
        names, ips = _sans(cert)
        if node["name"] not in names:
            problems.append(f"{spec['path']}: SANs {sorted(names)} lack {node['name']}")
        if str(ipaddress.ip_address(node["address"])) not in ips:
            problems.append(f"{spec['path']}: SANs {sorted(ips)} lack {node['address']}")
    assert not problems, "\n".join(problems)
