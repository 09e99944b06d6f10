"""What the stack runs: one ``ServiceSpec`` per service, started in table order.

A later service (accesslog) is one more entry in ``stack_specs``: its command line, the
environment it needs, how to tell it is ready. The certmanager is one only when ACME is
configured (``HERON_ACME_DIRECTORY_URL``). The auth gateway always runs (password and PIN logins
need nothing else); its single sign-on needs ``HERON_AUTHGATEWAY_OIDC_ISSUER`` and the client's
id and secret, which reach it from the runner's environment as they are.

The edge authenticates to management with a proxy token that the runner makes itself, one per
start (unless ``HERON_MANAGEMENT_EDGE_TOKEN`` names one), and hands to both in their environment:
nothing secret is written to disk, a token never outlives the run it was made for, and management
replaces the previous run's token when it starts (``HERON_MANAGEMENT_EDGE_TOKEN``).
"""

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

from heron_bus.embedded import nats_server_args
from heron_core.secret_tokens import PROXY_TOKEN_PREFIX, generate_token
from heron_core.settings import LogFormat
from heron_stack.readiness import HttpOk, ReadyCheck, TcpAccepting
from heron_stack.settings import StackSettings, split_address


@dataclass(frozen=True)
class ServiceSpec:
    """One supervised process.

    ``env`` is laid over the runner's own environment. ``ready_checks`` pass in order before the
    next service starts. ``listens`` are the ``(host, port)`` pairs the service binds: the
    runner refuses to start it if something already answers there (an old stack, say), which
    would otherwise pass the ready checks in its place.
    """

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    ready_checks: tuple[ReadyCheck, ...] = ()
    listens: tuple[tuple[str, int], ...] = ()


def stack_specs(settings: StackSettings, *, stderr_is_tty: bool) -> list[ServiceSpec]:
    """The whole stack on one machine, in start order."""
    given = settings.management_edge_token
    edge_token = given.get_secret_value() if given else generate_token(PROXY_TOKEN_PREFIX)
    certificates = (
        [certmanager_spec(settings, stderr_is_tty=stderr_is_tty)] if settings.acme_enabled else []
    )
    return [
        nats_spec(settings),
        management_spec(settings, edge_token, stderr_is_tty=stderr_is_tty),
        *certificates,
        authgateway_spec(settings, stderr_is_tty=stderr_is_tty),
        edge_spec(settings, edge_token, stderr_is_tty=stderr_is_tty),
    ]


def nats_spec(settings: StackSettings) -> ServiceSpec:
    store_dir = settings.data_path / "nats"
    return ServiceSpec(
        name="nats",
        argv=tuple(
            nats_server_args(store_dir=store_dir, host="127.0.0.1", port=settings.nats_port)
        ),
        ready_checks=(TcpAccepting("127.0.0.1", settings.nats_port),),
        listens=(("127.0.0.1", settings.nats_port),),
    )


def management_spec(
    settings: StackSettings, edge_token: str, *, stderr_is_tty: bool
) -> ServiceSpec:
    url = settings.management_url
    return ServiceSpec(
        name="management",
        argv=(sys.executable, "-m", "heron_management"),
        env={
            **shared_env(settings, stderr_is_tty=stderr_is_tty),
            "HERON_MANAGEMENT_HOST": settings.management_host,
            "HERON_MANAGEMENT_PORT": str(settings.management_port),
            "HERON_MANAGEMENT_GRPC_HOST": settings.management_grpc_host,
            "HERON_MANAGEMENT_GRPC_PORT": str(settings.management_grpc_port),
            "HERON_MANAGEMENT_EDGE_TOKEN": edge_token,
        },
        ready_checks=(
            HttpOk(f"{url}/healthz"),
            HttpOk(f"{url}/readyz"),
            TcpAccepting(
                _connectable(settings.management_grpc_host), settings.management_grpc_port
            ),
        ),
        listens=(
            (settings.management_host, settings.management_port),
            (_connectable(settings.management_grpc_host), settings.management_grpc_port),
        ),
    )


def certmanager_spec(settings: StackSettings, *, stderr_is_tty: bool) -> ServiceSpec:
    """The certmanager, only with ACME configured; ready once it has read its KV buckets. Its
    other settings (challenge type, account e-mail, CA bundle) reach it from the runner's
    environment as they are."""
    assert settings.acme_directory_url is not None
    return ServiceSpec(
        name="certmanager",
        argv=(sys.executable, "-m", "heron_certmanager"),
        env={
            **shared_env(settings, stderr_is_tty=stderr_is_tty),
            "HERON_ACME_DIRECTORY_URL": settings.acme_directory_url,
            "HERON_CERTMANAGER_HOST": "127.0.0.1",
            "HERON_CERTMANAGER_PORT": str(settings.certmanager_port),
        },
        ready_checks=(HttpOk(settings.certmanager_health_url),),
        listens=(("127.0.0.1", settings.certmanager_port),),
    )


def authgateway_spec(settings: StackSettings, *, stderr_is_tty: bool) -> ServiceSpec:
    """The auth gateway on 127.0.0.1 (only the edge talks to it); ready once it has NATS and
    the services' auth records. Its callback URL follows the edge's auth domain and port unless
    ``HERON_AUTHGATEWAY_CALLBACK_URL`` is set."""
    env = {
        **shared_env(settings, stderr_is_tty=stderr_is_tty),
        "HERON_AUTHGATEWAY_HOST": "127.0.0.1",
        "HERON_AUTHGATEWAY_PORT": str(settings.authgateway_port),
    }
    if not os.environ.get("HERON_AUTHGATEWAY_CALLBACK_URL"):
        env["HERON_AUTHGATEWAY_CALLBACK_URL"] = settings.oidc_callback_url
    return ServiceSpec(
        name="authgateway",
        argv=(sys.executable, "-m", "heron_authgateway"),
        env=env,
        ready_checks=(HttpOk(f"{settings.authgateway_url}/healthz/ready"),),
        listens=(("127.0.0.1", settings.authgateway_port),),
    )


def edge_spec(settings: StackSettings, edge_token: str, *, stderr_is_tty: bool) -> ServiceSpec:
    """The edge, ready once it is alive: without root it may never get its WireGuard interface
    (and so never be *ready*), but it keeps running and says why, and the stack still comes up."""
    grpc_host = _connectable(settings.management_grpc_host)
    grpc_host = f"[{grpc_host}]" if ":" in grpc_host else grpc_host
    health_host, health_port = _knock_at(settings.proxy_health_address)
    health = f"[{health_host}]" if ":" in health_host else health_host
    return ServiceSpec(
        name="edge",
        argv=(sys.executable, "-m", "heron_edge"),
        env={
            **shared_env(settings, stderr_is_tty=stderr_is_tty),
            "HERON_PROXY_DOMAIN": settings.proxy_domain,
            "HERON_PROXY_TOKEN": edge_token,
            "HERON_PROXY_MANAGEMENT_URL": f"http://{grpc_host}:{settings.management_grpc_port}",
            # plain gRPC to management on this very machine: the token never leaves the host
            "HERON_PROXY_ALLOW_INSECURE": "true",
            "HERON_PROXY_ADDRESS": settings.proxy_address,
            "HERON_PROXY_HTTP_ADDRESS": settings.proxy_http_address,
            "HERON_PROXY_HEALTH_ADDRESS": settings.proxy_health_address,
            # a local CA signs each domain; with ACME on, the CA's certificates take precedence
            "HERON_PROXY_LOCAL_CA": "true",
            "HERON_PROXY_ACME_CERTIFICATES": str(settings.acme_enabled).lower(),
            "HERON_PROXY_WG_PORT": str(settings.proxy_wg_port),
            "HERON_PROXY_WIREGUARD_INTERFACE": settings.proxy_wireguard_interface,
            "HERON_PROXY_WIREGUARD_ENDPOINT": settings.edge_wireguard_endpoint,
            "HERON_PROXY_AUTHGATEWAY_URL": settings.authgateway_url,
            "HERON_PROXY_AUTH_DOMAIN": settings.auth_domain,
        },
        ready_checks=(HttpOk(f"http://{health}:{health_port}/healthz/live"),),
        listens=tuple(
            _knock_at(address)
            for address in (
                settings.proxy_address,
                settings.proxy_http_address,
                settings.proxy_health_address,
            )
            if address  # an empty HTTP address: no such listener
        ),
    )


def _knock_at(address: str) -> tuple[str, int]:
    """Where to knock for a listener on ``address`` (``:port`` listens everywhere)."""
    host, port = split_address(address)
    return _connectable(host or "0.0.0.0"), port  # noqa: S104  (compared, not bound)


def _connectable(host: str) -> str:
    """Where to knock for a server bound to ``host`` (a wildcard is reached on loopback)."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104  (compared, not bound)


def shared_env(settings: StackSettings, *, stderr_is_tty: bool) -> dict[str, str]:
    """What every Heron service of this stack agrees on."""
    return {
        "HERON_MODE": settings.mode.value,
        "HERON_DATA_DIR": str(settings.data_path),
        "HERON_NATS_URL": settings.nats_url,
        "HERON_LOG_LEVEL": settings.log_level,
        "HERON_LOG_FORMAT": child_log_format(settings.log_format, stderr_is_tty=stderr_is_tty),
        "PYTHONUNBUFFERED": "1",  # a child's lines reach the relay when written, not at exit
    }


def child_log_format(fmt: LogFormat, *, stderr_is_tty: bool) -> str:
    """A child writes into a pipe, so ``auto`` would pick JSON; decide by the runner's terminal."""
    if fmt is not LogFormat.AUTO:
        return fmt.value
    return LogFormat.CONSOLE.value if stderr_is_tty else LogFormat.JSON.value
