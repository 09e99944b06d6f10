"""Certificates and ACME challenge answers reach the edge's data plane from NATS KV.

A real ``nats-server`` and the edge's real pieces: ``BucketSync`` (the control process's NATS
side) feeding a ``CertificateStore`` and a ``ChallengeBook``, and a ``DataPlane`` on 127.0.0.1
getting their snapshots. The test writes to the buckets as the certmanager does and looks at
what a TLS client is shown on the main port and what port 80 answers.
"""

import asyncio
import contextlib
import hashlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import nats.errors
import pytest_asyncio
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from nats.js.kv import KeyValue

from heron_bus import connect
from heron_bus.embedded import EmbeddedNats
from heron_bus.kv import ACME_CHALLENGES, CERTIFICATES, ensure_bucket
from heron_certmanager.answers import tls_alpn_certificate
from heron_core.certificates import (
    ACME_TLS_ALPN,
    ChallengeAnswer,
    ChallengeType,
    StoredCertificate,
    certificate_key,
    http01_key,
    tlsalpn01_key,
)
from heron_core.tasks import spawn
from heron_edge.address import Address
from heron_edge.bucket_sync import BucketSync
from heron_edge.certs import CertificateStore
from heron_edge.challenges import ChallengeBook
from heron_edge.dataplane import DataPlane
from heron_edge.http.proxy import ProxyContext

DOMAIN = "shop.example.test"
#: RFC 8737 §3: the acmeIdentifier extension, critical, an OCTET STRING of SHA-256(key auth)
ACME_IDENTIFIER = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")
#: how long the edge may take to serve what was put in a bucket
SERVED_WITHIN_S = 5.0

T = TypeVar("T")


@dataclass
class NatsEdge:
    server: EmbeddedNats
    plane: DataPlane
    #: the buckets as the certmanager writes them (its own connection)
    certificates: KeyValue
    challenges: KeyValue


@pytest_asyncio.fixture
async def edge(tmp_path: Path) -> AsyncIterator[NatsEdge]:
    async with (
        EmbeddedNats(store_dir=tmp_path / "nats") as server,
        await connect(server.url, name="certmanager (test)") as bus,
    ):
        store = CertificateStore(certificate_directory=None)
        plane = DataPlane(
            ProxyContext(), main=Address("127.0.0.1", 0), http=Address("127.0.0.1", 0),
            reuse_port=False,
        )  # fmt: skip
        challenges = ChallengeBook(on_change=plane.apply_challenges)
        sync = BucketSync(server.url, certificates=store.external, challenges=challenges)

        async def push_certificates() -> None:
            async for snapshot in store.changes():
                plane.apply_certificates(snapshot)

        await store.start()
        await plane.start()
        tasks = [
            spawn(sync.run(), name="bucket sync"),
            spawn(push_certificates(), name="certificates to the data plane"),
        ]
        try:
            yield NatsEdge(
                server,
                plane,
                await ensure_bucket(bus, CERTIFICATES),
                await ensure_bucket(bus, ACME_CHALLENGES),
            )
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await plane.stop(0.5)
            await store.close()


def stored_certificate(ca: trustme.CA, domain: str = DOMAIN) -> tuple[StoredCertificate, str]:
    """A certificate as the certmanager stores it, and its leaf's SHA-256 fingerprint."""
    issued = ca.issue_cert(domain)
    leaf = x509.load_pem_x509_certificate(issued.cert_chain_pems[0].bytes())
    now = datetime.now(UTC)
    value = StoredCertificate(
        domain=domain,
        chain_pem="".join(blob.bytes().decode() for blob in issued.cert_chain_pems),
        key_pem=issued.private_key_pem.bytes().decode(),
        not_before=now,
        not_after=now + timedelta(days=90),
        issued_at=now,
        issuer="trustme",
    )
    return value, leaf.fingerprint(hashes.SHA256()).hex()


def tls_alpn01_answer(domain: str, key_authorization: str) -> ChallengeAnswer:
    """An answer as the certmanager writes it, with its RFC 8737 challenge certificate."""
    cert_pem, key_pem = tls_alpn_certificate(domain, key_authorization)
    return ChallengeAnswer(
        type=ChallengeType.TLS_ALPN_01,
        domain=domain,
        token=key_authorization.partition(".")[0],
        key_authorization=key_authorization,
        cert_pem=cert_pem,
        key_pem=key_pem,
    )


@dataclass(frozen=True)
class Shown:
    """What a TLS client saw of the main port."""

    certificate: x509.Certificate
    alpn: str | None

    @property
    def fingerprint(self) -> str:
        return self.certificate.fingerprint(hashes.SHA256()).hex()


async def shown(
    plane: DataPlane, server_name: str, alpn: tuple[str, ...] = ("http/1.1",)
) -> Shown | None:
    """What a TLS client offering ``alpn`` is shown; None when the edge ends the handshake."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(list(alpn))
    try:
        _, writer = await asyncio.open_connection(
            "127.0.0.1", plane.main_port, ssl=context, server_hostname=server_name
        )
    except (ConnectionError, ssl.SSLError):
        return None
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True)
        return Shown(x509.load_der_x509_certificate(der), ssl_object.selected_alpn_protocol())
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


async def fingerprint(plane: DataPlane, server_name: str) -> str | None:
    """The fingerprint of the certificate a browser gets for ``server_name``."""
    seen = await shown(plane, server_name)
    return None if seen is None else seen.fingerprint


async def port_80(plane: DataPlane, path: str, host: str = "anything.example") -> tuple[int, bytes]:
    """The status and body of a GET on port 80."""
    assert plane.http_port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", plane.http_port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    answer = await reader.read()  # the edge closes after its answer
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


async def eventually(
    look: Callable[[], Awaitable[T]],
    check: Callable[[T], bool],
    *,
    within_s: float = SERVED_WITHIN_S,
) -> T:
    """``look()`` again until ``check`` accepts what it returns."""
    latest: list[T] = []
    try:
        async with asyncio.timeout(within_s):
            while not check(seen := await look()):
                latest[:] = [seen]
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"still {latest!r} after {within_s}s") from None
    return seen


async def test_a_certificate_put_in_the_bucket_is_served_and_a_delete_takes_it_away(
    edge: NatsEdge,
) -> None:
    value, expected = stored_certificate(trustme.CA())

    await edge.certificates.put(certificate_key(DOMAIN), value.encode())
    await eventually(lambda: fingerprint(edge.plane, DOMAIN), lambda got: got == expected)
    assert await fingerprint(edge.plane, "other.example.test") != expected  # its own name only

    await edge.certificates.delete(certificate_key(DOMAIN))
    await eventually(lambda: fingerprint(edge.plane, DOMAIN), lambda got: got != expected)


async def test_a_corrupt_value_is_refused_and_the_previous_certificate_stays(
    edge: NatsEdge,
) -> None:
    ca = trustme.CA()
    value, expected = stored_certificate(ca)
    await edge.certificates.put(certificate_key(DOMAIN), value.encode())
    await eventually(lambda: fingerprint(edge.plane, DOMAIN), lambda got: got == expected)

    await edge.certificates.put(certificate_key(DOMAIN), b'{"domain": "shop.example.test", "chain')
    broken = value.model_copy(update={"key_pem": stored_certificate(ca)[0].key_pem})
    await edge.certificates.put(certificate_key(DOMAIN), broken.encode())
    # the watch is ordered: once a later put is served, the bad ones were seen and refused
    marker, marker_expected = stored_certificate(ca, "marker.example.test")
    await edge.certificates.put(certificate_key("marker.example.test"), marker.encode())
    await eventually(
        lambda: fingerprint(edge.plane, "marker.example.test"), lambda got: got == marker_expected
    )

    assert await fingerprint(edge.plane, DOMAIN) == expected


async def test_certificates_keep_coming_after_nats_restarts(edge: NatsEdge) -> None:
    ca = trustme.CA()
    before, before_expected = stored_certificate(ca)
    await edge.certificates.put(certificate_key(DOMAIN), before.encode())
    await eventually(lambda: fingerprint(edge.plane, DOMAIN), lambda got: got == before_expected)

    await edge.server.stop()
    assert await fingerprint(edge.plane, DOMAIN) == before_expected  # kept while NATS is away
    await edge.server.start()

    after, after_expected = stored_certificate(ca)

    async def put_after() -> bool:
        with contextlib.suppress(nats.errors.Error, TimeoutError):  # the test's connection is back
            await edge.certificates.put(certificate_key(DOMAIN), after.encode())
            return True
        return False

    await eventually(put_after, bool, within_s=15.0)
    await eventually(
        lambda: fingerprint(edge.plane, DOMAIN), lambda got: got == after_expected, within_s=15.0
    )


async def test_an_http01_answer_is_served_on_port_80(edge: NatsEdge) -> None:
    token = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
    key_authorization = f"{token}.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
    path = f"/.well-known/acme-challenge/{token}"
    assert (await port_80(edge.plane, path))[0] == 404

    answer = ChallengeAnswer(
        type=ChallengeType.HTTP_01, domain=DOMAIN, token=token, key_authorization=key_authorization
    )
    await edge.challenges.put(http01_key(token), answer.encode())

    _, body = await eventually(lambda: port_80(edge.plane, path), lambda got: got[0] == 200)
    assert body == key_authorization.encode()
    assert (await port_80(edge.plane, path, host=DOMAIN))[0] == 200
    assert (await port_80(edge.plane, "/.well-known/acme-challenge/other"))[0] == 404
    assert (await port_80(edge.plane, "/index.html"))[0] == 308  # the rest still redirects

    await edge.challenges.delete(http01_key(token))
    await eventually(lambda: port_80(edge.plane, path), lambda got: got[0] == 404)


async def test_a_tls_alpn01_validation_gets_the_challenge_certificate(edge: NatsEdge) -> None:
    key_authorization = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0.thumbprint"
    value, expected = stored_certificate(trustme.CA())
    answer = tls_alpn01_answer(DOMAIN, key_authorization)
    await edge.certificates.put(certificate_key(DOMAIN), value.encode())
    await edge.challenges.put(tlsalpn01_key(DOMAIN), answer.encode())

    def challenge_certificate(seen: Shown | None) -> bool:
        return seen is not None and any(
            extension.oid == ACME_IDENTIFIER for extension in seen.certificate.extensions
        )

    validation = await eventually(
        lambda: shown(edge.plane, DOMAIN, alpn=(ACME_TLS_ALPN,)), challenge_certificate
    )
    assert validation is not None
    identifier = validation.certificate.extensions.get_extension_for_oid(ACME_IDENTIFIER)
    digest = hashlib.sha256(key_authorization.encode()).digest()
    assert identifier.critical and identifier.value.public_bytes() == b"\x04\x20" + digest
    assert validation.alpn == ACME_TLS_ALPN
    # a client offering more than acme-tls/1 is no validation: it gets the domain's certificate
    browser = await shown(edge.plane, DOMAIN, alpn=("h2", ACME_TLS_ALPN, "http/1.1"))
    assert browser is not None and browser.fingerprint == expected
    assert browser.alpn == "http/1.1"

    # a name with no answer: no handshake
    await edge.challenges.delete(tlsalpn01_key(DOMAIN))
    await eventually(lambda: shown(edge.plane, DOMAIN, alpn=(ACME_TLS_ALPN,)), lambda s: s is None)
    assert await shown(edge.plane, "unknown.example.test", alpn=(ACME_TLS_ALPN,)) is None
