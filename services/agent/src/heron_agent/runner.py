"""``heron up``: log in, bring the tunnel up, serve the forwarder, follow management's config.

Everything that can fail transiently is retried with backoff (management away, the stream cut,
wireguard-go dying); what cannot succeed by waiting (a refused setup key, no root) ends the run
with a message that says what to do. SIGINT/SIGTERM stop it cleanly: forwarder closed,
interface removed, status file saying so.
"""

import asyncio
import contextlib
import os
import signal
import socket
import time
from dataclasses import dataclass, replace
from pathlib import Path

import structlog
import uvloop

from heron_agent import __version__
from heron_agent.allowed import AllowedTargets
from heron_agent.forwarder import DEFAULT_PORT, Forwarder, ForwarderLimits
from heron_agent.management import EdgePeer, ManagementClient, ManagementError, SyncStream
from heron_agent.state import Login, StateDir, Status, now_iso
from heron_agent.tunnel import AgentTunnel
from heron_core.backoff import Backoff
from heron_core.errors import ConfigError, HeronError
from heron_core.process import calm_garbage_collector
from heron_core.tasks import spawn
from heron_tunnel.keys import public_key_of
from heron_tunnel.wireguard import WireGuardError, WireGuardExitedError

log = structlog.get_logger(__name__)

#: how often the tunnel's handshakes are read, reported and written to the status file
STATUS_INTERVAL_S = 5.0
#: a sync stream that lasted this long failed for a new reason: reconnect quickly again
STABLE_STREAM_S = 60.0
#: tries to bring the WireGuard interface up (at start, after wireguard-go died) before the
#: agent gives up: a failure can be passing (wireguard-go's socket directory, shared by every
#: network namespace, being made or removed by another instance at that moment)
TUNNEL_UP_ATTEMPTS = 5


@dataclass(frozen=True)
class UpOptions:
    state_dir: Path
    interface: str
    management_url: str | None = None
    setup_key: str | None = None
    hostname: str = socket.gethostname()
    wireguard_port: int | None = None
    forwarder_port: int = DEFAULT_PORT
    tcp_fast_open: bool = True


class AgentStoppedError(HeronError):
    """The agent cannot go on; the message says why and what to do."""


class _Agent:
    def __init__(self, options: UpOptions, state: StateDir) -> None:
        self.options = options
        self.state = state
        self.allowed = AllowedTargets()
        self.edges: tuple[EdgePeer, ...] = ()
        self.stream: SyncStream | None = None
        self.status = Status(
            state="starting", detail="", updated_at=now_iso(), pid=os.getpid(),
            management_url=options.management_url or "", interface=options.interface,
        )  # fmt: skip

    def set_status(self, **changes: object) -> None:
        self.status = replace(self.status, updated_at=now_iso(), **changes)  # type: ignore[arg-type]
        try:
            self.state.save_status(self.status)
        except OSError as exc:
            log.warning("cannot write the status file", error=str(exc))


async def run_up(options: UpOptions) -> None:
    """Run until cancelled (the CLI cancels on SIGINT/SIGTERM); raises ``AgentStoppedError``."""
    if os.geteuid() != 0:
        raise AgentStoppedError(
            "heron up needs root (CAP_NET_ADMIN) to create its WireGuard interface"
        )
    state = StateDir(options.state_dir)
    try:
        state.prepare()
        private_key = state.private_key()
        saved = state.load_login()
    except (ConfigError, PermissionError) as exc:
        raise AgentStoppedError(str(exc)) from exc
    url = options.management_url or (saved.management_url if saved else None)
    if not url:
        raise AgentStoppedError("no management URL: run heron up --management URL --setup-key KEY")
    if saved and saved.management_url != url:
        saved = None  # another management: its token means nothing there
    if not saved and not options.setup_key:
        raise AgentStoppedError(f"this peer has not logged in to {url} yet: add --setup-key KEY")
    agent = _Agent(replace(options, management_url=url), state)
    async with ManagementClient(url) as client:
        login = await _login(agent, client, public_key_of(private_key), saved)
        tunnel = AgentTunnel(
            options.interface, private_key, login.overlay_address, login.overlay_network,
            listen_port=options.wireguard_port,
        )  # fmt: skip
        await _bring_up(agent, tunnel)
        forwarder = Forwarder(agent.allowed, ForwarderLimits(fast_open=options.tcp_fast_open))
        try:
            await forwarder.start(login.overlay_address, options.forwarder_port)
            calm_garbage_collector()  # the forwarder is the hot path from here on
            agent.set_status(
                state="connecting", detail="tunnel up", peer_id=login.peer_id,
                overlay_address=login.overlay_address,
            )  # fmt: skip
            async with asyncio.TaskGroup() as group:
                group.create_task(_follow(agent, client, tunnel, login), name="sync")
                group.create_task(_report(agent, tunnel), name="status")
                group.create_task(_watch_wireguard(agent, tunnel), name="wireguard watchdog")
        finally:
            with contextlib.suppress(Exception):
                await forwarder.close(grace_s=2.0)
            await tunnel.down()
            agent.set_status(state="stopped", detail="heron up ended", sync_connected=False)
            log.info("agent stopped")


async def _login(
    agent: _Agent, client: ManagementClient, public_key: str, saved: Login | None
) -> Login:
    options = agent.options
    backoff = Backoff(initial_s=0.5, max_s=10.0, reset_after_s=STABLE_STREAM_S)
    while True:
        agent.set_status(state="logging in", detail=f"to {client.url}")
        try:
            if saved and not options.setup_key:
                login = await client.login(
                    public_key=public_key, hostname=options.hostname, version=__version__,
                    peer_token=saved.peer_token,
                )  # fmt: skip
            else:
                login = await client.login(
                    public_key=public_key, hostname=options.hostname, version=__version__,
                    setup_key=options.setup_key,
                )  # fmt: skip
        except ManagementError as exc:
            if not exc.retryable:
                agent.set_status(state="stopped", detail=str(exc))
                raise AgentStoppedError(str(exc)) from exc
            delay = backoff.delay_after(0.0)
            log.warning("login failed, retrying", error=str(exc), retry_in_s=delay)
            agent.set_status(state="logging in", detail=f"{exc}; retrying in {delay:g} s")
            await asyncio.sleep(delay)
            continue
        agent.state.save_login(login)
        log.info(
            "logged in", peer_id=login.peer_id, overlay_address=login.overlay_address,
            management=client.url,
        )  # fmt: skip
        return login


async def _follow(
    agent: _Agent, client: ManagementClient, tunnel: AgentTunnel, login: Login
) -> None:
    """Keep the sync stream open and apply every config it brings."""
    backoff = Backoff(initial_s=0.5, max_s=10.0, reset_after_s=STABLE_STREAM_S)
    while True:
        started = time.monotonic()
        stream = client.sync(
            login.peer_token, version=__version__, forwarder_port=agent.options.forwarder_port
        )
        agent.stream = stream
        try:
            async for config in stream.configs():
                await tunnel.set_edges(config.edges)
                agent.allowed.replace(config.allowed_targets)
                agent.edges = config.edges
                stream.ack(config.sequence)
                log.info(
                    "config applied", sequence=config.sequence, snapshot=config.snapshot,
                    edges=len(config.edges), allowed_targets=len(config.allowed_targets),
                )  # fmt: skip
                agent.set_status(
                    state="connected", detail="", sync_connected=True,
                    allowed_targets=len(config.allowed_targets),
                )  # fmt: skip
        except ManagementError as exc:
            if exc.code == "UNAUTHENTICATED":
                raise AgentStoppedError(
                    f"{exc}: this peer was deleted or its token replaced; log in again with "
                    "heron up --setup-key KEY"
                ) from exc
            problem = str(exc)
        else:
            problem = "the sync stream ended"
        finally:
            stream.close()
            agent.stream = None
        delay = backoff.delay_after(time.monotonic() - started)
        log.warning("sync lost, reconnecting", error=problem, retry_in_s=delay)
        agent.set_status(
            state="reconnecting", detail=f"{problem}; retrying in {delay:g} s",
            sync_connected=False,
        )  # fmt: skip
        await asyncio.sleep(delay)


async def _report(agent: _Agent, tunnel: AgentTunnel) -> None:
    """Read handshakes, tell management when the picture changes, keep the status file fresh."""
    reported: tuple[tuple[str, bool], ...] | None = None
    while True:
        await asyncio.sleep(STATUS_INTERVAL_S)
        try:
            edges = await tunnel.edge_status()
        except HeronError as exc:
            log.warning("cannot read the tunnel's state", error=str(exc))
            continue
        agent.set_status(edges=edges)
        picture = tuple((e.public_key, e.handshake_age_s is not None) for e in edges)
        if agent.stream is not None and picture != reported:
            agent.stream.report([(e.public_key, e.handshake_age_s) for e in edges])
            reported = picture


async def _watch_wireguard(agent: _Agent, tunnel: AgentTunnel) -> None:
    """Bring wireguard-go back if it dies, with the edges it had."""
    backoff = Backoff(initial_s=0.5, max_s=10.0, reset_after_s=STABLE_STREAM_S)
    while True:
        started = time.monotonic()
        try:
            await tunnel.interface.wait_closed()
            return  # taken down on purpose
        except WireGuardExitedError as exc:
            delay = backoff.delay_after(time.monotonic() - started)
            log.error("wireguard-go exited, restarting it", error=str(exc), retry_in_s=delay)
            agent.set_status(detail=f"WireGuard restarting: {exc}")
        await asyncio.sleep(delay)
        await tunnel.down()
        await _bring_up(agent, tunnel)
        await tunnel.set_edges(agent.edges)


async def _bring_up(agent: _Agent, tunnel: AgentTunnel, backoff: Backoff | None = None) -> None:
    """``tunnel.up()``, tried ``TUNNEL_UP_ATTEMPTS`` times with backoff; then the agent stops."""
    backoff = backoff or Backoff(initial_s=0.5, max_s=5.0, reset_after_s=STABLE_STREAM_S)
    for attempt in range(1, TUNNEL_UP_ATTEMPTS + 1):
        try:
            await tunnel.up()
        except WireGuardError as exc:
            if attempt == TUNNEL_UP_ATTEMPTS:
                agent.set_status(state="stopped", detail=f"the tunnel did not come up: {exc}")
                raise AgentStoppedError(
                    f"the WireGuard interface did not come up in {attempt} tries: {exc}"
                ) from exc
            delay = backoff.delay_after(0.0)
            log.warning(
                "the WireGuard interface did not come up, retrying",
                error=str(exc), attempt=attempt, retry_in_s=delay,
            )  # fmt: skip
            agent.set_status(detail=f"tunnel: {exc}; retrying in {delay:g} s")
            await asyncio.sleep(delay)
        else:
            return


def run_until_signal(options: UpOptions) -> int:
    """The CLI's entry: run ``heron up`` until SIGINT/SIGTERM; 0 when stopped, 1 on failure."""

    async def main() -> int:
        loop = asyncio.get_running_loop()
        task = spawn(run_up(options), name="heron up")
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            return 0
        except (AgentStoppedError, ExceptionGroup) as exc:
            stopped = _stopped(exc)
            if stopped is None:
                raise
            log.error("heron up stopped", reason=str(stopped))
            return 1
        return 0

    # uvloop: the forwarder's relays wake once per message, and uvloop's wakeups cost less
    return uvloop.run(main())


def _stopped(exc: BaseException) -> AgentStoppedError | None:
    """The ``AgentStoppedError`` in ``exc``, which may come wrapped in a task group's exceptions."""
    if isinstance(exc, AgentStoppedError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (found := _stopped(inner)) is not None:
                return found
    return None
