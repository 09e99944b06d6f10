"""The ``acme`` library behind a small, synchronous API; its errors become ours here, once.

``AcmeAccount`` holds the account key and registers it (once, lazily: the CA may be down at
start-up); ``AcmeAccount.session()`` gives an ``AcmeSession`` for one order, used from one
worker thread (``asyncio.to_thread``): the library speaks ``requests`` and blocks. Polling and
waiting stay with the caller, which reads ``retry_after_s`` from each answer.

The library dropped tls-alpn-01 (RFC 8737); ``TLSALPN01`` below registers the challenge type
again so its challenges parse as key-authorization challenges.
"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import requests
from acme import challenges, client, messages
from acme import errors as acme_errors
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.errors import DeserializationError
from josepy.interfaces import JSONDeSerializable
from josepy.jwa import ES256
from josepy.jwk import JWK, JWKEC

from heron_certmanager.errors import CaUnreachableError, OrderFailedError, RateLimitedError
from heron_core.certificates import ChallengeType

USER_AGENT = "heron-certmanager"
#: one HTTP request to the CA; the order as a whole has its own deadline
REQUEST_TIMEOUT_S = 30
#: the CA refuses these names for good: trying again changes nothing (RFC 8555 §6.7)
PERMANENT_PROBLEMS = frozenset({"rejectedIdentifier", "unsupportedIdentifier", "malformed"})


@challenges.ChallengeResponse.register
class TLSALPN01Response(challenges.KeyAuthorizationChallengeResponse):
    typ = ChallengeType.TLS_ALPN_01.value


@challenges.Challenge.register
class TLSALPN01(challenges.KeyAuthorizationChallenge):
    response_cls = TLSALPN01Response
    typ = response_cls.typ

    def validation(self, account_key: JWK, **kwargs: Any) -> Any:
        """The key authorization the answer certificate is built from (``answers``)."""
        return self.key_authorization(account_key)


@dataclass(frozen=True)
class Challenge:
    type: str
    url: str
    status: str
    token: str
    key_authorization: str


@dataclass(frozen=True)
class Authorization:
    url: str
    domain: str
    status: str
    challenges: tuple[Challenge, ...]
    #: the CA's words when a challenge failed
    problem: str | None
    retry_after_s: float | None


@dataclass(frozen=True)
class Order:
    url: str
    status: str
    authorizations: tuple[str, ...]
    finalize_url: str
    certificate_url: str | None
    problem: str | None
    retry_after_s: float | None


def load_or_create_account_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The account key at ``path`` (PEM, P-256), made on first use with mode 0600."""
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"ACME account key {str(path)!r} is not an EC key")
        return key
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    partial = path.with_suffix(".partial")
    partial.touch(mode=0o600)
    partial.write_bytes(pem)
    partial.replace(path)  # never a half-written key, even if two processes race
    return key


class AcmeAccount:
    """The account at the CA of ``directory_url``; thread-safe."""

    def __init__(
        self,
        directory_url: str,
        key: ec.EllipticCurvePrivateKey,
        *,
        email: str | None = None,
        ca_file: Path | None = None,
    ) -> None:
        self.directory_url = directory_url
        self.jwk = JWKEC(key=key)
        self._email = email
        # requests takes a CA bundle's path where acme's hint says bool
        self._verify: Any = str(ca_file) if ca_file else True
        self._lock = threading.Lock()
        self._directory: messages.Directory | None = None
        self._registration: messages.RegistrationResource | None = None

    def session(self) -> "AcmeSession":
        """A session for one order; registers the account first if that has not happened."""
        with self._lock:
            if self._directory is None or self._registration is None:
                self._directory, self._registration = self._register()
            return AcmeSession(self, self._directory, self._registration)

    def network(self, registration: messages.RegistrationResource | None) -> client.ClientNetwork:
        return client.ClientNetwork(
            self.jwk,
            account=registration,
            alg=ES256,
            verify_ssl=self._verify,
            user_agent=USER_AGENT,
            timeout=REQUEST_TIMEOUT_S,
        )

    def _register(self) -> tuple[messages.Directory, messages.RegistrationResource]:
        net = self.network(None)
        with translated(f"register at {self.directory_url!r}", net):
            directory = client.ClientV2.get_directory(self.directory_url, net)
            acme = client.ClientV2(directory, net)
            new = messages.NewRegistration.from_data(
                email=self._email, terms_of_service_agreed=True
            )
            try:
                registration = acme.new_account(new)
            except acme_errors.ConflictError as exists:  # this key has an account already
                registration = messages.RegistrationResource(
                    uri=exists.location, body=messages.Registration()
                )
        return directory, registration


class AcmeSession:
    """One order's conversation with the CA; not shared between threads."""

    def __init__(
        self,
        account: AcmeAccount,
        directory: messages.Directory,
        registration: messages.RegistrationResource,
    ) -> None:
        self._account = account
        self._net = account.network(registration)
        self._acme = client.ClientV2(directory, self._net)

    def new_order(self, csr_pem: bytes) -> Order:
        with translated("create an order", self._net):
            created = self._acme.new_order(csr_pem)
        return self.order(created.uri)

    def order(self, url: str) -> Order:
        with translated("read the order", self._net):
            response = self._post_as_get(url)
            body = messages.Order.from_json(response.json())
        return Order(
            url=url,
            status=body.status.name,
            authorizations=tuple(body.authorizations),
            finalize_url=body.finalize,
            certificate_url=body.certificate,
            problem=_problem_text(body.error) if body.error else None,
            retry_after_s=_retry_after_s(response),
        )

    def authorization(self, url: str) -> Authorization:
        with translated("read an authorization", self._net):
            response = self._post_as_get(url)
            body = messages.Authorization.from_json(response.json())
        found = [challb for challb in body.challenges if challb.error is not None]
        return Authorization(
            url=url,
            domain=body.identifier.value,
            status=body.status.name,
            challenges=tuple(self._challenge(challb) for challb in body.challenges),
            problem=_problem_text(found[0].error) if found else None,
            retry_after_s=_retry_after_s(response),
        )

    def answer(self, challenge: Challenge) -> None:
        """Tell the CA the answer is in place: it validates now."""
        with translated(f"answer the {challenge.type} challenge", self._net):
            self._acme.net.post(challenge.url, _EmptyObject(), **self._nonce())

    def finalize(self, order: Order, csr_pem: bytes) -> None:
        request = messages.CertificateRequest(csr=x509.load_pem_x509_csr(csr_pem))
        with translated("finalize the order", self._net):
            self._acme.net.post(order.finalize_url, request, **self._nonce())

    def certificate_chain(self, order: Order) -> str:
        if order.certificate_url is None:
            raise OrderFailedError("the CA marked the order valid without a certificate URL")
        with translated("download the certificate", self._net):
            return self._post_as_get(order.certificate_url).text

    def _challenge(self, challb: messages.ChallengeBody) -> Challenge:
        chall = challb.chall
        if not isinstance(chall, challenges.KeyAuthorizationChallenge):
            return Challenge(str(challb.typ), challb.uri, challb.status.name, "", "")
        return Challenge(
            type=chall.typ,
            url=challb.uri,
            status=challb.status.name,
            token=chall.encode("token"),
            key_authorization=chall.key_authorization(self._account.jwk),
        )

    def _post_as_get(self, url: str) -> requests.Response:
        response: requests.Response = self._acme.net.post(url, None, **self._nonce())
        return response

    def _nonce(self) -> dict[str, str]:
        return {"new_nonce_url": self._acme.directory["newNonce"]}


@contextmanager
def translated(doing: str, net: client.ClientNetwork) -> Iterator[None]:
    """Re-raise the library's and requests' errors as ``OrderFailedError`` and its kinds."""
    answers = _RetryAfterWatch(net)
    try:
        yield
    except messages.Error as problem:
        reason = _problem_text(problem)
        if problem.code == "rateLimited":
            raise RateLimitedError(reason, retry_after=answers.retry_after()) from problem
        raise OrderFailedError(
            reason, permanent=problem.code in PERMANENT_PROBLEMS, retry_after=answers.retry_after()
        ) from problem
    except requests.RequestException as exc:
        raise CaUnreachableError(f"{doing}: the CA did not answer ({exc})") from exc
    except (acme_errors.Error, DeserializationError) as exc:
        raise OrderFailedError(f"{doing}: unexpected answer from the CA ({exc})") from exc
    finally:
        answers.close()


class _RetryAfterWatch:
    """The ``Retry-After`` of the CA's last answer while a ``translated`` block runs (the
    library raises its problem documents without the response they came in)."""

    def __init__(self, net: client.ClientNetwork) -> None:
        self._hooks: list[Any] = net.session.hooks.setdefault("response", [])
        self._hooks.append(self._seen)
        self._last: requests.Response | None = None

    def _seen(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self._last = response

    def retry_after(self) -> datetime | None:
        seconds = _retry_after_s(self._last) if self._last is not None else None
        return None if seconds is None else datetime.now(UTC) + timedelta(seconds=seconds)

    def close(self) -> None:
        self._hooks.remove(self._seen)


def _retry_after_s(response: requests.Response) -> float | None:
    """``Retry-After`` in seconds from now (RFC 9110 §10.2.3: seconds or an HTTP date)."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def _problem_text(problem: messages.Error) -> str:
    """The CA's own words: its ``detail``, else the standard description of its type."""
    return str(problem.detail or problem.description or problem.typ)


class _EmptyObject(JSONDeSerializable):
    """``{}``: the body that tells the CA to validate a challenge (RFC 8555 §7.5.1). The
    library sends an empty *payload* for a falsy object, which is a POST-as-GET instead."""

    def to_partial_json(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_json(cls, jobj: Any) -> "_EmptyObject":
        return cls()
