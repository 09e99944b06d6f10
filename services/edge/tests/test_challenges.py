"""ACME challenge answers: the control process's book (checked values, one publication per burst,
refusals that keep the previous answer), a worker's responder, and port 80's http-01 answers."""

import asyncio
import pickle
from typing import cast

import pytest
from structlog.testing import capture_logs

from heron_bus.kv import KvChange
from heron_core.certificates import ChallengeAnswer, ChallengeType, http01_key, tlsalpn01_key
from heron_edge.address import Address
from heron_edge.bucket_sync import BucketSync
from heron_edge.certs import CertificateStore, self_signed_pair
from heron_edge.challenges import (
    ChallengeAnswers,
    ChallengeBook,
    ChallengeError,
    ChallengeResponder,
)
from heron_edge.dataplane import DataPlane, RedirectConnection
from heron_edge.http.proxy import ProxyContext

DOMAIN = "shop.example.com"
TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
KEY_AUTHORIZATION = f"{TOKEN}.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"


def http01(token: str = TOKEN, key_authorization: str = KEY_AUTHORIZATION) -> ChallengeAnswer:
    return ChallengeAnswer(
        type=ChallengeType.HTTP_01, domain=DOMAIN, token=token, key_authorization=key_authorization
    )


def tls_alpn01(domain: str = DOMAIN, *, names: tuple[str, ...] = ()) -> ChallengeAnswer:
    pair = self_signed_pair(list(names or (domain,)))
    return ChallengeAnswer(
        type=ChallengeType.TLS_ALPN_01,
        domain=domain,
        token=TOKEN,
        key_authorization=KEY_AUTHORIZATION,
        cert_pem=pair.chain_pem.decode(),
        key_pem=pair.key_pem.decode(),
    )


class Published:
    def __init__(self) -> None:
        self.answers: list[ChallengeAnswers] = []

    def __call__(self, answers: ChallengeAnswers) -> None:
        self.answers.append(answers)


async def test_a_burst_of_answers_is_published_once_after_it() -> None:
    published = Published()
    book = ChallengeBook(on_change=published)
    book.put(http01_key(TOKEN), http01().encode())
    book.put(http01_key("other"), http01("other", "other.thumb").encode())
    book.put(tlsalpn01_key(DOMAIN), tls_alpn01().encode())
    assert published.answers == []

    await asyncio.sleep(0)

    assert len(published.answers) == 1
    answers = published.answers[0]
    assert answers.http01 == {TOKEN: KEY_AUTHORIZATION, "other": "other.thumb"}
    pair = answers.tls_alpn01.lookup(DOMAIN)
    assert pair is not None and pair.source == f"acme-challenge:{DOMAIN}"
    assert pickle.loads(pickle.dumps(answers)) == answers  # it goes to the workers


async def test_removing_an_answer_publishes_and_removing_nothing_does_not() -> None:
    published = Published()
    book = ChallengeBook(on_change=published)
    book.put(http01_key(TOKEN), http01().encode())
    book.put(tlsalpn01_key(DOMAIN), tls_alpn01().encode())
    await asyncio.sleep(0)

    book.remove(http01_key(TOKEN))
    book.remove(tlsalpn01_key(DOMAIN))
    book.remove("http-01.never-there")
    await asyncio.sleep(0)
    book.remove("http-01.never-there")
    await asyncio.sleep(0)

    assert len(published.answers) == 2
    assert published.answers[-1].http01 == {}
    assert published.answers[-1].tls_alpn01.lookup(DOMAIN) is None


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (http01_key(TOKEN), b"[]", "not a challenge answer"),
        (http01_key(TOKEN), b'{"type": "dns-01"}', r"type \(enum\)"),
        (http01_key("another-token"), http01().encode(), "belongs under 'http-01.evaGx"),
        (tlsalpn01_key(DOMAIN), http01().encode(), "this http-01 answer belongs under"),
        (tlsalpn01_key("other.example.com"), tls_alpn01().encode(), "belongs under"),
        (
            tlsalpn01_key(DOMAIN),
            tls_alpn01().model_copy(update={"key_pem": None}).encode(),
            "needs its certificate and key",
        ),
        (
            tlsalpn01_key(DOMAIN),
            tls_alpn01()
            .model_copy(update={"key_pem": self_signed_pair(["x.example"]).key_pem.decode()})
            .encode(),
            "does not belong to the certificate",
        ),
        (
            tlsalpn01_key(DOMAIN),
            tls_alpn01(names=("www.example.com",)).encode(),
            "does not name 'shop.example.com'",
        ),
    ],
)
async def test_values_that_cannot_be_served_are_refused(
    key: str, value: bytes, reason: str
) -> None:
    book = ChallengeBook(on_change=Published())
    with pytest.raises(ChallengeError, match=reason) as caught:
        book.put(key, value)
    assert "PRIVATE KEY" not in str(caught.value)


async def test_a_refused_value_keeps_the_previous_answer_with_one_log_line() -> None:
    published = Published()
    book = ChallengeBook(on_change=published)
    bucket = BucketSync(
        "nats://unused",
        certificates=CertificateStore(certificate_directory=None).external,
        challenges=book,
    )
    bucket.apply_challenge(KvChange(tlsalpn01_key(DOMAIN), tls_alpn01().encode()))
    before = book.answers.tls_alpn01.lookup(DOMAIN)

    with capture_logs() as logs:
        bucket.apply_challenge(KvChange(tlsalpn01_key(DOMAIN), b"garbage"))

    assert [entry["event"] for entry in logs] == [
        "challenge answer refused, keeping the previous one"
    ]
    assert book.answers.tls_alpn01.lookup(DOMAIN) == before
    bucket.apply_challenge(KvChange(tlsalpn01_key(DOMAIN), None))
    assert book.answers.tls_alpn01.lookup(DOMAIN) is None


async def test_a_worker_answers_by_token_and_by_server_name_only() -> None:
    book = ChallengeBook(on_change=Published())
    book.put(http01_key(TOKEN), http01().encode())
    book.put(tlsalpn01_key(DOMAIN), tls_alpn01().encode())
    responder = ChallengeResponder()
    assert responder.key_authorization(TOKEN) is None
    assert responder.tls_alpn01_context(DOMAIN) is None

    responder.update(book.answers)

    assert responder.key_authorization(TOKEN) == KEY_AUTHORIZATION
    assert responder.key_authorization("unknown") is None
    context = responder.tls_alpn01_context("Shop.Example.com.")
    assert context is not None and context is responder.tls_alpn01_context(DOMAIN)  # made once
    assert responder.tls_alpn01_context("other.example.com") is None
    assert responder.tls_alpn01_context(None) is None


class Transport:
    """What ``RedirectConnection`` needs of a transport: it writes one answer and closes."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


async def port_80(plane: DataPlane, request: bytes) -> tuple[bytes, bytes]:
    """The status line and body port 80 answers ``request`` with."""
    connection = RedirectConnection(plane)
    transport = Transport()
    connection.connection_made(cast("asyncio.Transport", transport))
    connection.data_received(request)
    connection.connection_lost(None)
    assert transport.closed
    head, _, body = bytes(transport.written).partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0], body


@pytest.mark.parametrize(
    ("request_line", "status", "body"),
    [
        (
            f"GET /.well-known/acme-challenge/{TOKEN} HTTP/1.1",
            b"200 OK",
            KEY_AUTHORIZATION.encode(),
        ),
        (
            f"GET /.well-known/acme-challenge/{TOKEN}?x=1 HTTP/1.1",
            b"200 OK",
            KEY_AUTHORIZATION.encode(),
        ),
        (f"HEAD /.well-known/acme-challenge/{TOKEN} HTTP/1.1", b"200 OK", b""),
        (f"POST /.well-known/acme-challenge/{TOKEN} HTTP/1.1", b"404 Not Found", None),
        ("GET /.well-known/acme-challenge/unknown HTTP/1.1", b"404 Not Found", None),
        ("GET /.well-known/acme-challenge/ HTTP/1.1", b"404 Not Found", None),
    ],
)
async def test_port_80_answers_http01_challenges_for_any_host(
    request_line: str, status: bytes, body: bytes | None
) -> None:
    plane = DataPlane(ProxyContext(), main=Address("127.0.0.1", 0), http=None)
    book = ChallengeBook(on_change=plane.apply_challenges)
    book.put(http01_key(TOKEN), http01().encode())
    await asyncio.sleep(0)

    got_status, got_body = await port_80(
        plane, f"{request_line}\r\nHost: whatever.example\r\n\r\n".encode()
    )

    assert got_status == b"HTTP/1.1 " + status
    if body is not None:
        assert got_body == body
