"""ACME challenge answers: what the certmanager puts in the ``acme_challenges`` bucket, served by
every worker so that whichever edge the CA reaches answers.

``ChallengeBook`` is the control process's copy, keyed like the bucket; it checks each value
(``ChallengeError`` when it cannot be served, and the key's previous answer stays) and hands a
frozen, picklable ``ChallengeAnswers`` to ``on_change`` once per burst of changes. A worker's
``ChallengeResponder`` answers from the latest one: the http-01 key authorization by token
(port 80), the tls-alpn-01 TLS context by server name (the main port, for a ClientHello that
offers only ``acme-tls/1``, RFC 8737 §3).
"""

import asyncio
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import structlog

from heron_core.certificates import (
    ACME_TLS_ALPN,
    ChallengeAnswer,
    ChallengeType,
    http01_key,
    tlsalpn01_key,
)
from heron_core.errors import HeronError
from heron_edge.certs.contexts import ServerContexts
from heron_edge.certs.pairs import CertificateError, CertificatePair, load_pair, normalize_name
from heron_edge.certs.snapshot import CertificateSnapshot
from heron_edge.certs.stored import value_problem

log = structlog.get_logger(__name__)

#: the ALPN list of a tls-alpn-01 validation: the CA offers this protocol and no other
ACME_ONLY_ALPN = (ACME_TLS_ALPN,)


class ChallengeError(HeronError):
    """A value in the ``acme_challenges`` bucket that cannot be served; the message says why."""


@dataclass(frozen=True)
class ChallengeAnswers:
    """Every pending answer, as the workers get them."""

    #: http-01: token → the key authorization, the body of ``/.well-known/acme-challenge/<token>``
    http01: Mapping[str, str] = field(default_factory=dict)
    #: tls-alpn-01: the self-signed challenge certificates, each naming its domain only
    tls_alpn01: CertificateSnapshot = field(default_factory=CertificateSnapshot)


class ChallengeBook:
    """The answers in the control process; ``put`` and ``remove`` by the bucket's key."""

    def __init__(self, on_change: Callable[[ChallengeAnswers], None]) -> None:
        self._on_change = on_change
        self._http01: dict[str, tuple[str, str]] = {}  # key → (token, key authorization)
        self._tls_alpn01: dict[str, CertificatePair] = {}  # key → challenge certificate
        self._publishing = False

    @property
    def answers(self) -> ChallengeAnswers:
        return ChallengeAnswers(
            http01=dict(self._http01.values()),
            tls_alpn01=CertificateSnapshot.build(0, external=list(self._tls_alpn01.values())),
        )

    def put(self, key: str, value: bytes) -> None:
        """Serve the answer ``value`` holds; ``ChallengeError`` (nothing changes) if it cannot."""
        answer = _decode(key, value)
        # the key says the type (``_decode`` checks it), so a key never moves between the two
        if answer.type is ChallengeType.HTTP_01:
            self._http01[key] = (answer.token, answer.key_authorization)
        else:
            self._tls_alpn01[key] = _challenge_certificate(answer)
        log.info("challenge answer ready", key=key, domain=answer.domain)
        self._changed()

    def remove(self, key: str) -> None:
        if self._http01.pop(key, None) is not None or self._tls_alpn01.pop(key, None) is not None:
            log.info("challenge answer removed", key=key)
            self._changed()

    def _changed(self) -> None:
        # the bucket's initial values arrive in one turn of the event loop: publish once after
        if not self._publishing:
            self._publishing = True
            asyncio.get_running_loop().call_soon(self._publish)

    def _publish(self) -> None:
        self._publishing = False
        self._on_change(self.answers)


def _decode(key: str, value: bytes) -> ChallengeAnswer:
    try:
        answer = ChallengeAnswer.decode(value)
    except ValueError as exc:
        raise ChallengeError(f"not a challenge answer: {value_problem(exc)}") from exc
    expected = (
        http01_key(answer.token)
        if answer.type is ChallengeType.HTTP_01
        else tlsalpn01_key(answer.domain)
    )
    if key != expected:
        raise ChallengeError(f"this {answer.type.value} answer belongs under {expected!r}")
    return answer


def _challenge_certificate(answer: ChallengeAnswer) -> CertificatePair:
    if not (answer.cert_pem and answer.key_pem):
        raise ChallengeError("a tls-alpn-01 answer needs its certificate and key")
    try:
        pair = load_pair(
            answer.cert_pem.encode(),
            answer.key_pem.encode(),
            source=f"acme-challenge:{answer.domain}",
        )
    except CertificateError as exc:
        raise ChallengeError(exc.reason) from exc
    if normalize_name(answer.domain) not in pair.names:
        raise ChallengeError(f"the certificate does not name {answer.domain!r}")
    return pair


class ChallengeResponder:
    """A worker's answers: ``update`` with each ``ChallengeAnswers`` the control process sends."""

    def __init__(self) -> None:
        self._http01: Mapping[str, str] = {}
        self._tls = ServerContexts(alpn=ACME_ONLY_ALPN)

    def update(self, answers: ChallengeAnswers) -> None:
        self._http01 = answers.http01
        self._tls.update(answers.tls_alpn01)

    def key_authorization(self, token: str) -> str | None:
        return self._http01.get(token)

    def tls_alpn01_context(self, server_name: str | None) -> ssl.SSLContext | None:
        """The context presenting the challenge certificate for ``server_name``; None: none."""
        if self._tls.snapshot.lookup(server_name) is None:
            return None
        return self._tls.context_for(server_name)
