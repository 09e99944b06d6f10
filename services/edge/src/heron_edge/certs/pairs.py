"""A certificate chain and its key, validated once, and the rule for which names it covers.

Every certificate the edge serves passes through ``load_pair``: a file on disk, a chain from
the ACME bucket, a leaf from the local CA. What comes out is a ``CertificatePair`` whose PEM is
re-encoded (the leaf, then its issuers; the key as unencrypted PKCS#8), so a worker that loads it
into OpenSSL loads exactly what was checked here.

Expiry is a choice: ``load_pair`` refuses an expired certificate unless ``allow_expired``; the
file sources allow it only when they hold nothing better for that slot (at start-up an expired
certificate for the right name beats the fallback), never to replace a pair still valid.
"""

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from heron_core.errors import HeronError

#: a certificate issued "now" by a host whose clock runs a little ahead is still accepted
CLOCK_SKEW = timedelta(minutes=5)
#: below this OpenSSL's default security level refuses the key anyway, with a vaguer message
MIN_RSA_BITS = 2048
_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
_PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"


class CertificateError(HeronError):
    """A certificate or key that cannot be served; ``reason`` says why, for a person."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


@dataclass(frozen=True)
class CertificatePair:
    chain_pem: bytes  # leaf first, then the intermediates
    key_pem: bytes  # PKCS#8, unencrypted
    names: tuple[str, ...]  # DNS names, lower case, no trailing dot
    not_after: datetime  # UTC
    fingerprint: str  # SHA-256 of the leaf's DER, hex
    source: str  # where it came from, for people: a path, "acme:<name>", "local-ca"

    def expired(self, now: datetime | None = None) -> bool:
        return (now or datetime.now(UTC)) >= self.not_after


def normalize_name(name: str) -> str:
    """A DNS name as certificates and SNI compare it: lower case, no trailing dot."""
    return name.lower().removesuffix(".")


def covers(pair_names: Iterable[str], server_name: str) -> bool:
    """Whether a certificate for ``pair_names`` is valid for ``server_name`` (RFC 6125 §6.4.3).

    A wildcard stands for exactly one whole, non-empty left-most label: ``*.example.com``
    covers ``a.example.com`` but neither ``example.com`` nor ``a.b.example.com``.
    """
    name = normalize_name(server_name)
    label, _, parent = name.partition(".")
    for candidate in map(normalize_name, pair_names):
        if candidate == name:
            return True
        if candidate.startswith("*.") and label and parent and candidate[2:] == parent:
            return True
    return False


def load_pair(
    chain_pem: bytes,
    key_pem: bytes,
    *,
    source: str,
    now: datetime | None = None,
    allow_expired: bool = False,
) -> CertificatePair:
    """Parse and check a chain and its key; raise ``CertificateError`` saying what is wrong."""
    chain = _load_chain(chain_pem, source)
    leaf = chain[0]
    key = _load_key(key_pem, source)
    if _public_der(key.public_key()) != _public_der(leaf.public_key()):
        raise CertificateError(source, "the private key does not belong to the certificate")
    _check_validity(leaf, source, now or datetime.now(UTC), allow_expired=allow_expired)
    _check_server_auth(leaf, source)
    return CertificatePair(
        chain_pem=b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in chain),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        names=_dns_names(leaf, source),
        not_after=leaf.not_valid_after_utc,
        fingerprint=leaf.fingerprint(hashes.SHA256()).hex(),
        source=source,
    )


def _load_chain(chain_pem: bytes, source: str) -> list[x509.Certificate]:
    if _PEM_CERTIFICATE not in chain_pem:
        raise CertificateError(source, "no PEM certificate (-----BEGIN CERTIFICATE-----) found")
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError as exc:
        raise CertificateError(source, f"the certificate PEM cannot be parsed: {exc}") from exc
    for position, (cert, issuer) in enumerate(itertools.pairwise(chain), start=1):
        if cert.issuer != issuer.subject:
            raise CertificateError(
                source,
                f"the chain is out of order: certificate {position + 1} "
                f"({issuer.subject.rfc4514_string()!r}) did not issue certificate {position} "
                f"({cert.subject.rfc4514_string()!r}); put the leaf first, then its issuers",
            )
    return chain


def _load_key(
    key_pem: bytes, source: str
) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError as exc:  # cryptography's way of saying "it needs a password"
        raise CertificateError(
            source, "the private key is encrypted; the edge needs it unencrypted"
        ) from exc
    except ValueError as exc:
        raise CertificateError(source, f"the private key cannot be parsed: {exc}") from exc
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise CertificateError(
                source, f"the RSA key has {key.key_size} bits; at least {MIN_RSA_BITS} are needed"
            )
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, _CURVES):
            raise CertificateError(
                source, f"the EC key is on curve {key.curve.name!r}; use P-256, P-384 or P-521"
            )
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    raise CertificateError(
        source, f"unsupported key type {type(key).__name__!r}; use RSA, EC or Ed25519"
    )


def _public_der(key: object) -> bytes:
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        return b""  # the certificate's key is of a type no accepted private key can match
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _check_validity(
    leaf: x509.Certificate, source: str, now: datetime, *, allow_expired: bool
) -> None:
    if leaf.not_valid_before_utc > now + CLOCK_SKEW:
        raise CertificateError(
            source, f"the certificate is not valid before {leaf.not_valid_before_utc.isoformat()}"
        )
    if not allow_expired and leaf.not_valid_after_utc <= now:
        raise CertificateError(
            source, f"the certificate expired at {leaf.not_valid_after_utc.isoformat()}"
        )


def _check_server_auth(leaf: x509.Certificate, source: str) -> None:
    try:
        usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return  # no restriction: good for any purpose
    allowed = {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
    if not allowed & set(usages):
        raise CertificateError(
            source, "the certificate's extended key usage does not allow TLS servers"
        )


def _dns_names(leaf: x509.Certificate, source: str) -> tuple[str, ...]:
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = san.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        # clients ignore the CN when a SAN is present (RFC 6125 §6.4.4), so only then is it read
        names = [
            value
            for attribute in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            if isinstance(value := attribute.value, str)
        ]
    unique = tuple(dict.fromkeys(normalize_name(name) for name in names if name))
    if not unique:
        raise CertificateError(source, "the certificate names no DNS name (subjectAltName or CN)")
    return unique
