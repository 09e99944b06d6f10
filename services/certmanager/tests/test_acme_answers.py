"""How the CA's refusals become ours, against a small fake CA on a real socket (Pebble never
rate-limits): its problem document's words, its Retry-After, permanent or not."""

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from heron_certmanager.acme_client import AcmeAccount
from heron_certmanager.errors import CaUnreachableError, OrderFailedError, RateLimitedError
from heron_certmanager.issued import csr_for, new_certificate_key

PROBLEM = "application/problem+json"


class FakeCa(BaseHTTPRequestHandler):
    """A directory, nonces and accounts as RFC 8555 has them; every order gets ``refusal``."""

    refusal: tuple[int, dict[str, str], dict[str, str]] = (500, {}, {})

    def do_GET(self) -> None:
        base = f"http://127.0.0.1:{self.server.server_port}"  # type: ignore[attr-defined]
        names = {"newNonce": "nonce", "newAccount": "account", "newOrder": "order"}
        self._send(200, {name: f"{base}/{path}" for name, path in names.items()})

    def do_HEAD(self) -> None:
        self._send(200, None)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        if self.path == "/account":
            self._send(201, {"status": "valid"}, {"Location": "http://127.0.0.1/acct/1"})
            return
        status, problem, headers = self.refusal
        self._send(status, problem, {"Content-Type": PROBLEM, **headers})

    def _send(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Replay-Nonce", "bm9uY2U")
        for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002  (the stdlib's name)
        pass


@pytest.fixture
def fake_ca() -> Iterator[tuple[str, type[FakeCa]]]:
    handler = type("Handler", (FakeCa,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/dir", handler
    finally:
        server.shutdown()
        server.server_close()


def order(directory_url: str) -> None:
    session = AcmeAccount(directory_url, ec.generate_private_key(ec.SECP256R1())).session()
    session.new_order(csr_for("app.example.com", new_certificate_key()))


def problem(code: str, detail: str) -> dict[str, str]:
    return {"type": f"urn:ietf:params:acme:error:{code}", "detail": detail}


def test_a_rate_limit_is_kept_with_the_cas_retry_after_in_seconds(
    fake_ca: tuple[str, type[FakeCa]],
) -> None:
    url, handler = fake_ca
    handler.refusal = (429, problem("rateLimited", "too many new orders"), {"Retry-After": "120"})

    with pytest.raises(RateLimitedError) as raised:
        order(url)

    assert raised.value.reason == "too many new orders"
    assert raised.value.retry_after is not None
    assert 110 < (raised.value.retry_after - datetime.now(UTC)).total_seconds() <= 120
    assert not raised.value.permanent


def test_a_retry_after_may_be_an_http_date(fake_ca: tuple[str, type[FakeCa]]) -> None:
    url, handler = fake_ca
    when = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    retry_after = {"Retry-After": format_datetime(when, usegmt=True)}
    handler.refusal = (429, problem("rateLimited", "slow down"), retry_after)

    with pytest.raises(RateLimitedError) as raised:
        order(url)

    assert raised.value.retry_after is not None
    assert abs((raised.value.retry_after - when).total_seconds()) < 5


def test_a_rejected_name_is_a_permanent_refusal(fake_ca: tuple[str, type[FakeCa]]) -> None:
    url, handler = fake_ca
    handler.refusal = (400, problem("rejectedIdentifier", "policy forbids this name"), {})

    with pytest.raises(OrderFailedError) as raised:
        order(url)

    assert raised.value.permanent
    assert raised.value.reason == "policy forbids this name"


def test_a_ca_that_does_not_answer_is_unreachable() -> None:
    with pytest.raises(CaUnreachableError, match="did not answer"):
        order("http://127.0.0.1:1/dir")
