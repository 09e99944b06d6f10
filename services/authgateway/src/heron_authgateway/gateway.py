"""``Gateway``: what the routes share — the settings, the services' records, and once NATS
answered, the signing keys, the attempt counters and the SSO flows (``Backend``).

``run`` connects to NATS (waiting with backoff while it is away, the pages say "unavailable"
meanwhile), then follows ``auth_services`` and maintains the signing keys until cancelled.
"""

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, cast

import structlog
from fastapi import Depends, Request

from heron_authgateway.attempts import AttemptPolicy, Attempts
from heron_authgateway.errors import NotReadyError, UnknownServiceError
from heron_authgateway.flows import Flows
from heron_authgateway.keys import KeyRing
from heron_authgateway.registry import Registry
from heron_authgateway.settings import LOCKOUT_CAP_S, AuthGatewaySettings
from heron_authgateway.start_limit import StartLimit
from heron_bus.bucket import Bucket
from heron_bus.connection import Bus, connect
from heron_bus.errors import BusError
from heron_bus.kv import AUTH_ATTEMPTS, AUTH_FLOWS, AUTH_KEYS
from heron_core.auth import ServiceAuthRecord
from heron_core.backoff import Backoff

log = structlog.get_logger(__name__)

#: between two attempts to reach NATS: quick at first, then no more than a line per this long
CONNECT_RETRY_INITIAL_S = 0.5
CONNECT_RETRY_MAX_S = 15.0
#: a part that stopped on a NATS error starts again after this
RESTART_S = 1.0


@dataclass(frozen=True)
class Backend:
    bus: Bus
    keys: KeyRing
    attempts: Attempts
    flows: Flows


class Gateway:
    def __init__(
        self, settings: AuthGatewaySettings, *, client_name: str = "heron-authgateway"
    ) -> None:
        self.settings = settings
        self.registry = Registry()
        self.sso_starts = StartLimit()
        self._client_name = client_name
        self._backend: Backend | None = None

    def backend(self) -> Backend:
        if self._backend is None:
            raise NotReadyError("not connected to NATS yet")
        return self._backend

    def record(self, service_id: str) -> ServiceAuthRecord:
        """The login settings of ``service_id``; ``UnknownServiceError`` when it has none."""
        if not self.registry.loaded.is_set():
            raise NotReadyError("the services' auth records are not read yet")
        record = self.registry.get(service_id) if service_id else None
        if record is None:
            raise UnknownServiceError(f"no browser login for service {service_id!r}")
        return record

    def problems(self) -> list[str]:
        found = []
        if self._backend is None or not self._backend.bus.is_connected:
            found.append("not connected to NATS")
        if not self.registry.loaded.is_set():
            found.append("auth records not read yet")
        return found

    async def run(self) -> None:
        """Serve the parts until cancelled, starting again after NATS failed them."""
        while True:
            try:
                await self._run_once()
            except* BusError as group:
                reason = "; ".join(str(exc) for exc in group.exceptions)
                log.warning(
                    "starting again after a NATS error", reason=reason, retry_in_s=RESTART_S
                )
            await asyncio.sleep(RESTART_S)

    async def _run_once(self) -> None:
        bus = await self._connect()
        try:
            backend = Backend(
                bus=bus,
                keys=KeyRing(
                    await Bucket.open(bus, AUTH_KEYS),
                    rotation_s=self.settings.key_rotation_s,
                    session_ttl_s=self.settings.session_ttl_s,
                ),
                attempts=Attempts(await Bucket.open(bus, AUTH_ATTEMPTS), self._policy()),
                flows=Flows(await Bucket.open(bus, AUTH_FLOWS)),
            )
            await backend.keys.signing_key()  # published before the first login needs it
            self._backend = backend
            async with asyncio.TaskGroup() as group:
                group.create_task(_restarting(self.registry.follow, bus), name="auth records")
                group.create_task(backend.keys.maintain(), name="signing keys")
        finally:
            self._backend = None
            await bus.close()

    def _policy(self) -> AttemptPolicy:
        return AttemptPolicy(
            max_failures=self.settings.authgateway_max_failures,
            window_s=self.settings.failure_window_s,
            lockout_s=self.settings.lockout_s,
            lockout_cap_s=LOCKOUT_CAP_S,
            service_max_failures=self.settings.authgateway_service_max_failures,
        )

    async def _connect(self) -> Bus:
        backoff = Backoff(
            initial_s=CONNECT_RETRY_INITIAL_S, max_s=CONNECT_RETRY_MAX_S, reset_after_s=float("inf")
        )
        while True:
            try:
                bus = await connect(self.settings.nats_url, name=self._client_name)
            except BusError as exc:  # the message names the URL without its credentials
                delay = backoff.delay_after(0.0)
                log.warning("waiting for NATS", reason=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                continue
            log.info("connected to NATS", url=bus.url)
            return bus


async def _restarting(part: Callable[[Bus], Awaitable[None]], bus: Bus) -> None:
    while True:
        try:
            await part(bus)
        except BusError as exc:
            if bus.is_closed:
                raise
            log.warning("restarting after a NATS error", reason=str(exc), retry_in_s=RESTART_S)
            await asyncio.sleep(RESTART_S)


def gateway_of(request: Request) -> Gateway:
    return cast("Gateway", request.app.state.gateway)


GatewayDep = Annotated[Gateway, Depends(gateway_of)]
