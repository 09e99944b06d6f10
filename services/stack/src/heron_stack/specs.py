"""What the stack runs: one ``ServiceSpec`` per service, started in table order.

A later service (edge, certmanager, authgateway, accesslog) is one more entry in
``stack_specs``: its command line, the environment it needs, how to tell it is ready.
"""

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

from heron_bus.embedded import nats_server_args
from heron_core.settings import LogFormat
from heron_stack.readiness import HttpOk, ReadyCheck, TcpAccepting
from heron_stack.settings import StackSettings


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
    return [nats_spec(settings), management_spec(settings, stderr_is_tty=stderr_is_tty)]


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


def management_spec(settings: StackSettings, *, stderr_is_tty: bool) -> ServiceSpec:
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
