"""Minting certificates: the local CA's leaves and the workers' self-signed fallback.

Both are EC P-256 (fast to make, small handshakes) and carry what browsers check for a TLS
server certificate: the DNS name in the subjectAltName, ``serverAuth``, not a CA. The fallback
is also the quickest way for a test to get a ``CertificatePair``: ``self_signed_pair(["x"])``.
"""

import ipaddress
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from heron_edge.certs.pairs import CLOCK_SKEW, CertificateError, CertificatePair, load_pair
from heron_edge.certs.pairs import normalize_name as _normalize

#: RFC 1035 labels (plus "_", which real names carry), an optional leading wildcard label
_DNS_NAME = re.compile(
    r"(\*\.)?([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?"
)
_MAX_NAME_LENGTH = 253
#: X.520 caps a commonName at 64 characters; longer names live only in the subjectAltName
_MAX_COMMON_NAME = 64


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def dns_name(domain: str) -> str:
    """``domain`` normalized, or ``CertificateError`` when no certificate can name it."""
    name = _normalize(domain.strip())
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        raise CertificateError(domain, "an IP address, and certificates are issued for DNS names")
    if len(name) > _MAX_NAME_LENGTH or not _DNS_NAME.fullmatch(name):
        raise CertificateError(domain, "not a valid DNS name")
    return name


def build_leaf(
    names: Sequence[str],
    *,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    not_before: datetime,
    not_after: datetime,
    common_name: str | None = None,
) -> x509.Certificate:
    """A TLS server certificate for ``names``; self-signed when ``issuer`` is None.

    The subject's CN is ``common_name``, else the first name when it fits in a CN.
    """
    cn = common_name or names[0]
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, cn)] if len(cn) <= _MAX_COMMON_NAME else []
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer or subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        # RFC 5280 §4.2.1.6: with an empty subject the subjectAltName must be critical
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name) for name in names]),
            critical=not subject,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_SIGNING_ONLY, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def self_signed_pair(
    names: Sequence[str],
    *,
    valid_for: timedelta = timedelta(days=365),
    now: datetime | None = None,
    common_name: str | None = None,
    source: str = "self-signed",
) -> CertificatePair:
    """A self-signed pair for ``names`` (DNS names; the CN is ``common_name`` or the first)."""
    if not names:
        raise CertificateError(source, "a certificate needs at least one name")
    start = now or datetime.now(UTC)
    key = new_key()
    cert = build_leaf(
        names,
        key=key,
        issuer=None,
        issuer_key=key,
        not_before=start - CLOCK_SKEW,
        not_after=start + valid_for,
        common_name=common_name,
    )
    return load_pair(pem_of(cert), private_pem_of(key), source=source, now=start)


def pem_of(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def private_pem_of(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


_SIGNING_ONLY = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)
