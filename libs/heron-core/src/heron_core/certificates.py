"""What the certmanager writes to NATS KV and the edges read (a wire **contract**).

Bucket ``certificates``, key ``certificate_key(domain)``: a ``StoredCertificate`` as JSON — the
chain and the private key in PEM, with its validity. Bucket ``acme_challenges``: a
``ChallengeAnswer`` per pending challenge — ``http01_key(token)`` for http-01 (the edge answers
``GET /.well-known/acme-challenge/<token>`` on port 80 with ``key_authorization``),
``tlsalpn01_key(domain)`` for tls-alpn-01 (the edge presents ``cert_pem``/``key_pem`` to a
ClientHello for ``domain`` that offers only the ALPN protocol ``acme-tls/1``). A deleted key
means the certificate or challenge is gone.

NATS KV keys allow ``[-/_=.a-zA-Z0-9]``; domains are lower-case DNS names and ACME tokens are
base64url, so both fit as they are.
"""

from datetime import datetime
from enum import StrEnum

from heron_core.kv import KvRecord

#: the ALPN protocol of the tls-alpn-01 challenge (RFC 8737)
ACME_TLS_ALPN = "acme-tls/1"


class ChallengeType(StrEnum):
    TLS_ALPN_01 = "tls-alpn-01"
    HTTP_01 = "http-01"


class StoredCertificate(KvRecord):
    domain: str
    #: leaf first, then the intermediates
    chain_pem: str
    key_pem: str
    not_before: datetime
    not_after: datetime
    issued_at: datetime
    issuer: str


class ChallengeAnswer(KvRecord):
    type: ChallengeType
    domain: str
    #: http-01: the token in the URL; tls-alpn-01: the token too (for logs)
    token: str
    #: http-01: the body to answer with
    key_authorization: str
    #: tls-alpn-01: the self-signed certificate with the acmeIdentifier extension, and its key
    cert_pem: str | None = None
    key_pem: str | None = None


def certificate_key(domain: str) -> str:
    return domain.lower().rstrip(".")


def http01_key(token: str) -> str:
    return f"http-01.{token}"


def tlsalpn01_key(domain: str) -> str:
    return f"tls-alpn-01.{domain.lower().rstrip('.')}"
