"""The workers' side: an ``ssl.SSLContext`` per certificate, picked by the ClientHello's SNI.

A worker peeks the SNI, asks ``ServerContexts.context_for(name)`` and hands the socket to
``loop.connect_accepted_socket(..., ssl=context)``. Contexts are made on first use and kept by
fingerprint, so a new snapshot costs nothing for the certificates it did not change.

OpenSSL loads certificates only from files; the PEM goes into an anonymous ``memfd`` opened
as ``/proc/self/fd/N``, so no key touches the disk. A name nothing covers gets the fallback:
a self-signed certificate made once per process, so the handshake completes and the HTTP
handler can answer a clear 404 page instead of the client seeing a bare TLS alert.
"""

import functools
import os
import ssl
from collections.abc import Sequence
from datetime import timedelta

import structlog

from heron_edge.certs.issuing import self_signed_pair
from heron_edge.certs.pairs import CertificatePair
from heron_edge.certs.snapshot import CertificateSnapshot

log = structlog.get_logger(__name__)

DEFAULT_ALPN = ("http/1.1",)
#: Mozilla's "intermediate" TLS 1.2 suites (AEAD with forward secrecy); TLS 1.3 has its own
TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)
FALLBACK_COMMON_NAME = "heron-edge fallback"
#: RFC 2606's reserved TLD: a name no real client asks for
FALLBACK_NAME = "fallback.heron-edge.invalid"


def server_context(pair: CertificatePair, *, alpn: Sequence[str] = DEFAULT_ALPN) -> ssl.SSLContext:
    """A TLS server context presenting ``pair``; raises ``ssl.SSLError`` if OpenSSL refuses it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= (
        ssl.OP_NO_COMPRESSION  # CRIME
        | ssl.OP_NO_RENEGOTIATION  # a client-driven CPU sink in TLS 1.2, and useless to us
        | ssl.OP_CIPHER_SERVER_PREFERENCE
    )
    context.set_ciphers(TLS12_CIPHERS)
    # key exchange groups stay OpenSSL's default (X25519, P-256, X448, P-521, P-384):
    # set_ecdh_curve() would narrow them to a single curve
    if alpn:
        context.set_alpn_protocols(list(alpn))
    _load_chain(context, pair)
    return context


def _load_chain(context: ssl.SSLContext, pair: CertificatePair) -> None:
    fd = os.memfd_create("heron-certificate", os.MFD_CLOEXEC)
    try:
        with os.fdopen(os.dup(fd), "wb") as file:
            file.write(pair.chain_pem + pair.key_pem)
        context.load_cert_chain(f"/proc/self/fd/{fd}", password=_no_password)
    finally:
        os.close(fd)


def _no_password() -> str:
    # load_pair stores keys unencrypted; never let OpenSSL prompt on the terminal for one
    raise ssl.SSLError("the private key is encrypted")


@functools.cache
def fallback_pair() -> CertificatePair:
    """The self-signed pair this process presents when no certificate covers the name."""
    return self_signed_pair(
        [FALLBACK_NAME],
        common_name=FALLBACK_COMMON_NAME,
        valid_for=timedelta(days=3650),
        source="fallback",
    )


class ServerContexts:
    """The worker's contexts for one snapshot at a time; ``update`` swaps in the next."""

    def __init__(
        self, snapshot: CertificateSnapshot | None = None, *, alpn: Sequence[str] = DEFAULT_ALPN
    ) -> None:
        self._alpn = tuple(alpn)
        self._snapshot = snapshot or CertificateSnapshot()
        self._contexts: dict[str, ssl.SSLContext] = {}
        self.fallback = server_context(fallback_pair(), alpn=self._alpn)

    @property
    def snapshot(self) -> CertificateSnapshot:
        return self._snapshot

    def update(self, snapshot: CertificateSnapshot) -> None:
        """Serve ``snapshot`` from now on; contexts of unchanged certificates are kept."""
        kept = {pair.fingerprint for pair in snapshot.pairs}
        self._contexts = {fp: ctx for fp, ctx in self._contexts.items() if fp in kept}
        self._snapshot = snapshot

    def context_for(self, server_name: str | None) -> ssl.SSLContext:
        """The context for the SNI ``server_name`` (None: the client sent none)."""
        pair = self._snapshot.lookup(server_name)
        if pair is None:
            return self.fallback
        context = self._contexts.get(pair.fingerprint)
        if context is None:
            context = self._contexts[pair.fingerprint] = self._make(pair)
        return context

    def is_fallback(self, context: ssl.SSLContext) -> bool:
        """Whether ``context`` is the fallback: no certificate covers the name asked for."""
        return context is self.fallback

    def _make(self, pair: CertificatePair) -> ssl.SSLContext:
        try:
            return server_context(pair, alpn=self._alpn)
        except ssl.SSLError as exc:
            # validated in the control process, so this is OpenSSL's policy (e.g. its security
            # level); kept as the fallback for this pair so it is logged once, not per handshake
            log.error(
                "certificate refused by OpenSSL, serving the fallback",
                source=pair.source,
                names=pair.names,
                reason=str(exc),
            )
            return self.fallback
