"""The certificate's own key and CSR, and the CA's chain as the ``StoredCertificate`` the
edges read."""

from datetime import UTC, datetime

from acme.crypto_util import make_csr
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from heron_certmanager.errors import OrderFailedError
from heron_core.certificates import StoredCertificate


def new_certificate_key() -> str:
    """A fresh P-256 key, PEM (PKCS#8): one per order, never reused."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def csr_for(domain: str, key_pem: str) -> bytes:
    return make_csr(key_pem.encode(), [domain])


def stored_certificate(domain: str, chain_pem: str, key_pem: str) -> StoredCertificate:
    """The CA's chain (leaf first) with its key; ``OrderFailedError`` if it is not one."""
    try:
        leaf = x509.load_pem_x509_certificates(chain_pem.encode())[0]
    except ValueError as exc:
        raise OrderFailedError(f"the CA sent a certificate that does not parse: {exc}") from exc
    return StoredCertificate(
        domain=domain,
        chain_pem=chain_pem,
        key_pem=key_pem,
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        issued_at=datetime.now(UTC),
        issuer=leaf.issuer.rfc4514_string(),
    )
