"""A real OpenID Connect provider for the tests: the OpenID-certified ``oidc-provider`` npm package
(pinned in ``oidc/package-lock.json``) run by the machine's Node.js from ``oidc/provider.mjs``.

::

    async with OidcProvider(redirect_uris=["http://127.0.0.1:8081/.heron/auth/callback"]) as idp:
        idp.issuer, idp.client_id, idp.client_secret
        final = await idp.log_in(authorization_url, "alice")  # no browser: httpx posts the form
        final.params["code"], final.params["state"]

The provider's users (``DEFAULT_USERS``: ``alice`` in ``eng``, ``bob`` in ``ops``) log in on its
own HTML form (fields ``login`` and ``password``); consent is automatic; PKCE S256 is required;
the ``groups`` claim is in the ID token (``groups_in_id_token=False``: in userinfo only).
``rotate_keys()`` makes the provider sign with new keys. ``npm ci`` installs the package into
``oidc/node_modules`` the first time (under a file lock: pytest-xdist workers may race).
"""

import asyncio
import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import httpx

OIDC_DIR = Path(__file__).parent / "oidc"
START_TIMEOUT_S = 30.0
NPM_CI_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class User:
    id: str
    email: str
    name: str
    password: str
    groups: tuple[str, ...] = ()

    def as_config(self) -> dict[str, object]:
        return {
            "id": self.id, "email": self.email, "name": self.name,
            "password": self.password, "groups": list(self.groups),
        }  # fmt: skip


ALICE = User("alice", "alice@example.com", "Alice Liddell", "alice-password-1", ("eng",))
BOB = User("bob", "bob@example.com", "Bob Builder", "bob-password-2", ("ops",))
DEFAULT_USERS: tuple[User, ...] = (ALICE, BOB)


class OidcProviderError(Exception):
    pass


class LoginRefusedError(OidcProviderError):
    """The provider's login form refused the user and password."""


def ensure_node_modules() -> None:
    """``npm ci`` into ``oidc/node_modules`` unless it is there; safe to race from processes."""
    marker = OIDC_DIR / "node_modules" / "oidc-provider" / "package.json"
    if marker.exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise OidcProviderError("npm is not installed: the OIDC test provider needs Node.js")
    with (OIDC_DIR / ".npm-ci.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists():  # another worker installed it while we waited
            return
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=OIDC_DIR,
            capture_output=True,
            text=True,
            timeout=NPM_CI_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0 or not marker.exists():
            raise OidcProviderError(f"npm ci failed in {OIDC_DIR}: {done.stderr[-2000:]}")


def free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class OidcProvider:
    """The provider as a context manager (``async with`` or ``with``); one client, some users."""

    def __init__(
        self,
        *,
        redirect_uris: Sequence[str],
        host: str = "127.0.0.1",
        port: int | None = None,
        users: Sequence[User] = DEFAULT_USERS,
        client_id: str = "heron-test-client",
        client_secret: str | None = None,
        token_endpoint_auth_method: str = "client_secret_basic",
        id_token_signed_response_alg: str = "RS256",
        groups_in_id_token: bool = True,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        url_host = f"[{host}]" if ":" in host else host
        self.issuer = f"http://{url_host}:{self.port}"
        self.client_id = client_id
        self.client_secret = client_secret or secrets.token_urlsafe(24)
        self.redirect_uris = list(redirect_uris)
        self.users = {user.id: user for user in users}
        self._config = {
            "host": host,
            "port": self.port,
            "issuer": self.issuer,
            "client": {
                "client_id": self.client_id,
                "client_secret": self.client_secret,
                "redirect_uris": self.redirect_uris,
                "token_endpoint_auth_method": token_endpoint_auth_method,
                "id_token_signed_response_alg": id_token_signed_response_alg,
            },
            "users": [user.as_config() for user in users],
            "groups_in_id_token": groups_in_id_token,
        }
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # --- lifecycle ---

    def start(self) -> None:
        """Start node and wait until the discovery document answers (blocking)."""
        ensure_node_modules()
        node = shutil.which("node")
        if node is None:
            raise OidcProviderError("node is not installed: the OIDC test provider needs Node.js")
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 -- closed in stop()
        env = {**os.environ, "OIDC_PROVIDER_CONFIG": json.dumps(self._config)}
        env.pop("NODE_OPTIONS", None)
        self._process = subprocess.Popen(
            [node, "provider.mjs"],
            cwd=OIDC_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        url = f"{self.issuer}/.well-known/openid-configuration"
        with httpx.Client(timeout=2, trust_env=False) as client:
            while True:
                if self._process.poll() is not None:
                    output = self.output()
                    self.stop()
                    raise OidcProviderError(f"the OIDC provider exited at start: {output}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(url).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    output = self.output()
                    self.stop()
                    raise OidcProviderError(f"the OIDC provider did not answer: {output}")
                time.sleep(0.05)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def output(self) -> str:
        """What node printed so far (for failure messages)."""
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read()[-4000:].decode(errors="replace")

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    # --- helpers for tests ---

    async def rotate_keys(self) -> list[str]:
        """New signing keys at the provider (the old ones stay in its JWKS): the key ids."""
        async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
            response = await client.post(f"{self.issuer}/_test/rotate-keys")
            response.raise_for_status()
            kids: list[str] = response.json()["kids"]
            return kids

    async def log_in(
        self, authorization_url: str, user: str | User, password: str | None = None
    ) -> httpx.URL:
        """Log ``user`` in on the provider's form for ``authorization_url`` (no browser): the
        URL the provider finally redirects to (the client's redirect_uri with ``code`` and
        ``state``, or with ``error``)."""
        account = user if isinstance(user, User) else self.users[user]
        return await log_in(
            authorization_url,
            login=account.id,
            password=account.password if password is None else password,
            issuer=self.issuer,
        )


async def log_in(
    authorization_url: str, *, login: str, password: str, issuer: str | None = None
) -> httpx.URL:
    """Follow the provider's redirects from ``authorization_url``, post ``login`` and ``password``
    on its login form, and return the first redirect that leaves the provider (``issuer``'s
    origin; by default the authorization URL's)."""
    origin = httpx.URL(issuer or authorization_url)
    url = httpx.URL(authorization_url)
    async with httpx.AsyncClient(timeout=10, trust_env=False, follow_redirects=False) as client:
        response = await client.get(url)
        for _ in range(20):
            if response.is_redirect:
                url = url.join(response.headers["location"])
                if (url.scheme, url.host, url.port) != (origin.scheme, origin.host, origin.port):
                    return url
                response = await client.get(url)
            elif response.status_code == 200 and 'name="password"' in response.text:
                action = url.join(f"{url.path.rstrip('/')}/login")
                response = await client.post(action, data={"login": login, "password": password})
                if response.status_code == 401:
                    raise LoginRefusedError(f"the provider refused {login!r}")
                url = action
            else:
                raise OidcProviderError(
                    f"unexpected answer from the provider at {url}: HTTP {response.status_code}"
                    f" {response.text[:500]}"
                )
    raise OidcProviderError("too many redirects at the provider")
