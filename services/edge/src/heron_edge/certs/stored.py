"""Certificates from the certmanager: a ``StoredCertificate`` from the ``certificates`` bucket as
a ``CertificatePair`` to serve, or a ``CertificateError`` that says why not.

The value is checked like a file on disk (``load_pair``), and also against its key: it must be
filed under its own domain and name it, so a value put under the wrong key cannot take over
another domain's slot. No message quotes the value: it holds a private key.
"""

from pydantic import ValidationError

from heron_core.certificates import StoredCertificate, certificate_key
from heron_edge.certs.pairs import CertificateError, CertificatePair, covers, load_pair

#: how the pairs from the bucket show in logs and in ``CertificatePair.source``
SOURCE_PREFIX = "acme:"


def stored_pair(key: str, value: bytes) -> CertificatePair:
    """The pair that ``value`` (the bucket's entry under ``key``) holds; ``CertificateError`` if
    it is no stored certificate, is filed under another key, or holds a pair not to serve."""
    source = f"{SOURCE_PREFIX}{key}"
    try:
        stored = StoredCertificate.decode(value)
    except ValueError as exc:
        raise CertificateError(source, f"not a stored certificate: {value_problem(exc)}") from exc
    if certificate_key(stored.domain) != key:
        raise CertificateError(source, f"the value is for {stored.domain!r}, not for its key")
    pair = load_pair(stored.chain_pem.encode(), stored.key_pem.encode(), source=source)
    if not covers(pair.names, stored.domain):
        raise CertificateError(source, f"the certificate does not name {stored.domain!r}")
    return pair


def value_problem(exc: ValueError) -> str:
    """What is wrong with a KV value, in words that quote none of it."""
    if not isinstance(exc, ValidationError):
        return str(exc)  # our own schema check: it names versions, not values
    return ", ".join(
        f"{'.'.join(map(str, error['loc'])) or '(root)'} ({error['type']})"
        for error in exc.errors(include_url=False, include_input=False)
    )
