"""``heron-edge``: settings, logging, the WireGuard key, then the link to management."""

import asyncio
import signal
import sys

import structlog
from pydantic import ValidationError

from heron_core.errors import ConfigError
from heron_core.logging import configure_logging
from heron_core.tasks import spawn
from heron_edge.management import EdgeRefusedError, Identity, ManagementLink
from heron_edge.routes import RouteTable
from heron_edge.settings import EdgeSettings
from heron_edge.tunnel import EdgeTunnel
from heron_tunnel.keys import load_or_create_private_key, public_key_of

log = structlog.get_logger(__name__)


async def serve(settings: EdgeSettings) -> None:
    settings.key_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    private_key = load_or_create_private_key(settings.key_file)
    tunnel = EdgeTunnel(
        settings.proxy_wireguard_interface, private_key, settings.proxy_wireguard_port
    )
    identity = Identity(
        instance_id=settings.proxy_instance_id,
        proxy_domain=settings.proxy_domain,
        public_key=public_key_of(private_key),
        endpoint=settings.wireguard_endpoint,
        supports_custom_ports=settings.proxy_supports_custom_ports,
        require_subdomain=settings.proxy_require_subdomain,
    )
    link = ManagementLink(
        settings.proxy_management_url,
        settings.proxy_token.get_secret_value(),
        identity,
        tunnel,
        RouteTable(),
    )
    try:
        await link.run()
    finally:
        await tunnel.down()


def main() -> None:
    try:
        settings = EdgeSettings()
    except (ConfigError, ValidationError) as exc:
        print(f"heron-edge: {exc}", file=sys.stderr)  # noqa: T201  (logging is not set up yet)
        sys.exit(2)
    configure_logging("edge", level=settings.log_level, fmt=settings.log_format)

    async def run() -> int:
        task = spawn(serve(settings), name="edge")
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            log.info("edge stopped")
            return 0
        except EdgeRefusedError as exc:
            log.error("edge stopped", reason=str(exc))
            return 1
        return 0

    sys.exit(asyncio.run(run()))


if __name__ == "__main__":
    main()
