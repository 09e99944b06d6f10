"""heron_authgateway.oidc against a real OpenID Connect provider (``oidc-provider`` on Node.js,
tests/integration/oidc_provider.py): the whole code flow without a browser."""

import base64
import hashlib
import json
import secrets
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
from oidc_provider import ALICE, BOB, DEFAULT_USERS, OidcProvider, User, free_port

from heron_authgateway import oidc
from heron_authgateway.oidc import Identity, OidcClient, OidcError, new_pkce

REDIRECT_URI = "http://127.0.0.1:9/.heron/auth/callback"
CAROL = User("carol", "carol@example.com", "Carol", "carol-password-3", ("eng", "ops"))
DAVE = User("dave", "dave@example.com", "Dave", "dave-password-4", ())


def _start(alg: str = "RS256") -> Iterator[OidcProvider]:
    with OidcProvider(
        redirect_uris=[REDIRECT_URI],
        users=(*DEFAULT_USERS, CAROL, DAVE),
        id_token_signed_response_alg=alg,
    ) as provider:
        yield provider


@pytest.fixture(scope="module")
def provider() -> Iterator[OidcProvider]:
    yield from _start()


@pytest.fixture
async def client(provider: OidcProvider) -> AsyncIterator[OidcClient]:
    client = OidcClient(
        provider.issuer, provider.client_id, provider.client_secret, allow_http=True
    )
    yield client
    await client.aclose()


async def _code(provider: OidcProvider, client: OidcClient, user: User) -> tuple[str, str, str]:
    """Log ``user`` in: the code, the PKCE verifier and the nonce of that login."""
    pkce, state, nonce = new_pkce(), secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    url = await client.authorization_url(
        redirect_uri=REDIRECT_URI, state=state, nonce=nonce, code_challenge=pkce.challenge
    )
    final = await provider.log_in(url, user)
    assert str(final).startswith(REDIRECT_URI + "?"), final
    assert final.params["state"] == state
    return final.params["code"], pkce.verifier, nonce


async def _login(provider: OidcProvider, client: OidcClient, user: User) -> Identity:
    code, verifier, nonce = await _code(provider, client, user)
    return await client.finish(
        code=code, redirect_uri=REDIRECT_URI, code_verifier=verifier, nonce=nonce
    )


@pytest.mark.parametrize(
    ("user", "groups"), [(ALICE, ["eng"]), (BOB, ["ops"]), (CAROL, ["eng", "ops"]), (DAVE, [])]
)
async def test_code_flow_gives_the_users_groups(
    provider: OidcProvider, client: OidcClient, user: User, groups: list[str]
) -> None:
    identity = await _login(provider, client, user)
    assert identity.subject == user.id
    assert identity.email == user.email
    assert identity.name == user.name
    assert identity.groups == groups
    assert identity.claims["iss"] == provider.issuer


async def test_authorization_url_carries_pkce_state_and_nonce(
    provider: OidcProvider, client: OidcClient
) -> None:
    url = httpx.URL(
        await client.authorization_url(
            redirect_uri=REDIRECT_URI, state="st", nonce="no", code_challenge="ch"
        )
    )
    assert str(url).startswith(provider.issuer + "/")
    assert dict(url.params) == {
        "response_type": "code", "client_id": provider.client_id, "redirect_uri": REDIRECT_URI,
        "scope": "openid email profile groups", "state": "st", "nonce": "no",
        "code_challenge": "ch", "code_challenge_method": "S256",
    }  # fmt: skip


async def test_the_provider_requires_pkce(provider: OidcProvider, client: OidcClient) -> None:
    url = httpx.URL(
        await client.authorization_url(
            redirect_uri=REDIRECT_URI, state="s", nonce="n", code_challenge="x"
        )
    )
    without = url.copy_remove_param("code_challenge").copy_remove_param("code_challenge_method")
    final = await provider.log_in(str(without), ALICE)
    assert final.params.get("error") == "invalid_request"


async def test_a_wrong_nonce_is_refused(provider: OidcProvider, client: OidcClient) -> None:
    code, verifier, _ = await _code(provider, client, ALICE)
    with pytest.raises(OidcError) as caught:
        await client.finish(
            code=code, redirect_uri=REDIRECT_URI, code_verifier=verifier, nonce="another"
        )
    assert caught.value.reason == "nonce"


async def test_a_wrong_verifier_fails_at_the_provider(
    provider: OidcProvider, client: OidcClient
) -> None:
    code, _, nonce = await _code(provider, client, ALICE)
    with pytest.raises(OidcError) as caught:
        await client.finish(
            code=code, redirect_uri=REDIRECT_URI, code_verifier=new_pkce().verifier, nonce=nonce
        )
    assert caught.value.reason == "token_exchange"
    assert "invalid_grant" in str(caught.value)


async def test_a_reused_code_fails_at_the_provider(
    provider: OidcProvider, client: OidcClient
) -> None:
    code, verifier, nonce = await _code(provider, client, BOB)
    await client.finish(code=code, redirect_uri=REDIRECT_URI, code_verifier=verifier, nonce=nonce)
    with pytest.raises(OidcError) as caught:
        await client.finish(
            code=code, redirect_uri=REDIRECT_URI, code_verifier=verifier, nonce=nonce
        )
    assert caught.value.reason == "token_exchange"


async def test_a_wrong_client_secret_fails_at_the_provider(provider: OidcProvider) -> None:
    good = OidcClient(provider.issuer, provider.client_id, provider.client_secret, allow_http=True)
    bad = OidcClient(provider.issuer, provider.client_id, "not-the-secret", allow_http=True)
    try:
        code, verifier, nonce = await _code(provider, good, ALICE)
        with pytest.raises(OidcError) as caught:
            await bad.finish(
                code=code, redirect_uri=REDIRECT_URI, code_verifier=verifier, nonce=nonce
            )
        assert caught.value.reason == "token_exchange"
    finally:
        await good.aclose()
        await bad.aclose()


def _rewriting_transport(
    token_endpoint_suffix: str, rewrite: Callable[[dict[str, object]], dict[str, object]]
) -> httpx.AsyncBaseTransport:
    """A real transport whose token responses go through ``rewrite`` (a man in the middle)."""
    real = httpx.AsyncHTTPTransport()

    class Rewriting(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            response = await real.handle_async_request(request)
            if not request.url.path.endswith(token_endpoint_suffix):
                return response
            body = json.loads(await response.aread())
            return httpx.Response(response.status_code, json=rewrite(body))

        async def aclose(self) -> None:
            await real.aclose()

    return Rewriting()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _tamper_claims(**changes: object) -> Callable[[dict[str, object]], dict[str, object]]:
    def rewrite(body: dict[str, object]) -> dict[str, object]:
        token = body["id_token"]
        assert isinstance(token, str)
        head, payload, signature = token.split(".")
        claims = json.loads(_unb64(payload)) | changes
        return body | {"id_token": f"{head}.{_b64(json.dumps(claims).encode())}.{signature}"}

    return rewrite


def _tamper_header(**changes: object) -> Callable[[dict[str, object]], dict[str, object]]:
    def rewrite(body: dict[str, object]) -> dict[str, object]:
        token = body["id_token"]
        assert isinstance(token, str)
        head, payload, signature = token.split(".")
        header = json.loads(_unb64(head)) | changes
        return body | {"id_token": f"{_b64(json.dumps(header).encode())}.{payload}.{signature}"}

    return rewrite


def _drop_signature(body: dict[str, object]) -> dict[str, object]:
    token = body["id_token"]
    assert isinstance(token, str)
    _, payload, _ = token.split(".")
    header = _b64(json.dumps({"alg": "none"}).encode())
    return body | {"id_token": f"{header}.{payload}."}


@pytest.mark.parametrize(
    "rewrite",
    [
        _tamper_claims(groups=["admins"]),
        _tamper_claims(aud="another-client"),
        _tamper_claims(sub="bob"),
        _tamper_header(kid="no-such-key"),
        _tamper_header(alg="HS256"),
        _drop_signature,
        lambda body: body | {"id_token": "not-a-jwt"},
        lambda body: {k: v for k, v in body.items() if k != "id_token"},
    ],
    ids=["groups", "aud", "sub", "kid", "hs256", "none", "garbage", "missing"],
)
async def test_a_tampered_id_token_is_refused(
    provider: OidcProvider, rewrite: Callable[[dict[str, object]], dict[str, object]]
) -> None:
    good = OidcClient(provider.issuer, provider.client_id, provider.client_secret, allow_http=True)
    http = httpx.AsyncClient(transport=_rewriting_transport("/token", rewrite))
    victim = OidcClient(
        provider.issuer, provider.client_id, provider.client_secret, allow_http=True, http=http
    )
    try:
        code, verifier, nonce = await _code(provider, good, ALICE)
        with pytest.raises(OidcError) as caught:
            await victim.finish(
                code=code, redirect_uri=REDIRECT_URI, code_verifier=verifier, nonce=nonce
            )
        assert caught.value.reason in {"id_token", "token_exchange"}
    finally:
        await good.aclose()
        await victim.aclose()
        await http.aclose()


async def test_an_id_token_for_another_client_is_refused(provider: OidcProvider) -> None:
    """A genuine ID token whose audience is not this client (as if another client's code)."""
    good = OidcClient(provider.issuer, provider.client_id, provider.client_secret, allow_http=True)
    real = httpx.AsyncHTTPTransport()
    credentials = f"{provider.client_id}:{provider.client_secret}"

    class Impersonating(httpx.AsyncBaseTransport):
        """Sends the real client's credentials whatever the other client says."""

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path.endswith("/token"):
                request.headers["Authorization"] = "Basic " + _b64(credentials.encode())
            return await real.handle_async_request(request)

    http = httpx.AsyncClient(transport=Impersonating())
    other = OidcClient(
        provider.issuer, "another-client", provider.client_secret, allow_http=True, http=http
    )
    try:
        code, verifier, nonce = await _code(provider, good, ALICE)
        with pytest.raises(OidcError) as caught:
            await other.finish(
                code=code, redirect_uri=REDIRECT_URI, code_verifier=verifier, nonce=nonce
            )
        assert caught.value.reason == "id_token"
        assert "aud" in str(caught.value)
    finally:
        await good.aclose()
        await http.aclose()
        await real.aclose()


async def test_an_unreachable_issuer_is_a_discovery_error() -> None:
    client = OidcClient(f"http://127.0.0.1:{free_port('127.0.0.1')}", "c", "s", allow_http=True)
    try:
        with pytest.raises(OidcError) as caught:
            await client.authorization_url(
                redirect_uri=REDIRECT_URI, state="s", nonce="n", code_challenge="c"
            )
        assert caught.value.reason == "discovery"
    finally:
        await client.aclose()


async def test_a_discovery_document_of_another_issuer_is_refused(provider: OidcProvider) -> None:
    # the same server under another name: its discovery document names 127.0.0.1
    issuer = provider.issuer.replace("127.0.0.1", "localhost")
    client = OidcClient(issuer, provider.client_id, provider.client_secret, allow_http=True)
    try:
        with pytest.raises(OidcError) as caught:
            await client.authorization_url(
                redirect_uri=REDIRECT_URI, state="s", nonce="n", code_challenge="c"
            )
        assert caught.value.reason == "issuer"
    finally:
        await client.aclose()


async def test_a_path_without_a_discovery_document_is_a_discovery_error(
    provider: OidcProvider,
) -> None:
    client = OidcClient(provider.issuer + "/nothing", "c", "s", allow_http=True)
    try:
        with pytest.raises(OidcError) as caught:
            await client.authorization_url(
                redirect_uri=REDIRECT_URI, state="s", nonce="n", code_challenge="c"
            )
        assert caught.value.reason == "discovery"
    finally:
        await client.aclose()


def test_http_issuers_need_allow_http(provider: OidcProvider) -> None:
    with pytest.raises(OidcError) as caught:
        OidcClient(provider.issuer, provider.client_id, provider.client_secret)
    assert caught.value.reason == "insecure"


async def test_key_rotation_at_the_provider(
    provider: OidcProvider, client: OidcClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(oidc, "JWKS_MIN_REFRESH_S", 0.0)
    assert (await _login(provider, client, ALICE)).groups == ["eng"]
    kids = await provider.rotate_keys()
    assert len(kids) == 6
    identity = await _login(provider, client, BOB)
    assert identity.groups == ["ops"]


async def test_keys_older_than_their_max_age_are_fetched_again(
    provider: OidcProvider, client: OidcClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """So that a key the provider withdrew stops being accepted without a restart."""
    await _login(provider, client, ALICE)
    fetched_at = client._keys_at  # when the JWKS was last fetched
    await _login(provider, client, ALICE)
    assert client._keys_at == fetched_at  # fresh: used as it is
    monkeypatch.setattr(oidc, "JWKS_MAX_AGE_S", 0.0)
    monkeypatch.setattr(oidc, "JWKS_MIN_REFRESH_S", 0.0)
    await _login(provider, client, ALICE)
    assert client._keys_at is not None and fetched_at is not None
    assert client._keys_at > fetched_at  # aged: fetched again


@pytest.fixture(scope="module", params=["ES256", "EdDSA"])
def provider_alg(request: pytest.FixtureRequest) -> Iterator[OidcProvider]:
    yield from _start(request.param)


async def test_ec_and_eddsa_signed_id_tokens(provider_alg: OidcProvider) -> None:
    client = OidcClient(
        provider_alg.issuer, provider_alg.client_id, provider_alg.client_secret, allow_http=True
    )
    try:
        identity = await _login(provider_alg, client, ALICE)
        assert identity.groups == ["eng"]
    finally:
        await client.aclose()


async def test_groups_from_userinfo_when_the_id_token_lacks_them() -> None:
    async with OidcProvider(redirect_uris=[REDIRECT_URI], groups_in_id_token=False) as provider:
        client = OidcClient(
            provider.issuer, provider.client_id, provider.client_secret, allow_http=True
        )
        try:
            code, verifier, nonce = await _code(provider, client, BOB)
            identity = await client.finish(
                code=code, redirect_uri=REDIRECT_URI, code_verifier=verifier, nonce=nonce
            )
        finally:
            await client.aclose()
    assert identity.groups == ["ops"]
    assert identity.email == BOB.email


def test_pkce_is_s256() -> None:
    pkce = new_pkce()
    assert 43 <= len(pkce.verifier) <= 128
    assert pkce.challenge == _b64(hashlib.sha256(pkce.verifier.encode()).digest())
    assert new_pkce().verifier != pkce.verifier
