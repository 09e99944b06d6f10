"""What the edges serve to prove control of a domain, as ``ChallengeAnswer`` values for the
``acme_challenges`` bucket.

http-01 (RFC 8555 §8.3): the key authorization as the body of
``/.well-known/acme-challenge/<token>``. tls-alpn-01 (RFC 8737): a self-signed certificate for
the domain with the critical ``acmeIdentifier`` extension holding the SHA-256 of the key
authorization, presented to a ClientHello that offers only ALPN ``acme-tls/1``.
"""

import hashlib
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ObjectIdentifier

from heron_certmanager.acme_client import Challenge
from heron_core.certificates import ChallengeAnswer, ChallengeType, http01_key, tlsalpn01_key

#: id-pe-acmeIdentifier (RFC 8737 §6.1)
ACME_IDENTIFIER_OID = ObjectIdentifier("1.3.6.1.5.5.7.1.31")
#: the CA validates within minutes; a week covers any clock skew between it and us
ANSWER_CERT_VALIDITY = timedelta(days=7)
_DER_OCTET_STRING_32 = b"\x04\x20"  # tag and length of the extension's OCTET STRING


def answer_key(challenge_type: ChallengeType, domain: str, token: str) -> str:
    """The key of a challenge's answer in the ``acme_challenges`` bucket."""
    if challenge_type is ChallengeType.HTTP_01:
        return http01_key(token)
    return tlsalpn01_key(domain)


def challenge_answer(challenge: Challenge, domain: str) -> ChallengeAnswer:
    challenge_type = ChallengeType(challenge.type)
    cert_pem = key_pem = None
    if challenge_type is ChallengeType.TLS_ALPN_01:
        cert_pem, key_pem = tls_alpn_certificate(domain, challenge.key_authorization)
    return ChallengeAnswer(
        type=challenge_type,
        domain=domain,
        token=challenge.token,
        key_authorization=challenge.key_authorization,
        cert_pem=cert_pem,
        key_pem=key_pem,
    )


def tls_alpn_certificate(domain: str, key_authorization: str) -> tuple[str, str]:
    """The tls-alpn-01 answer certificate and its key, both PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    digest = hashlib.sha256(key_authorization.encode()).digest()
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + ANSWER_CERT_VALIDITY)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
        .add_extension(
            x509.UnrecognizedExtension(ACME_IDENTIFIER_OID, _DER_OCTET_STRING_32 + digest),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()
