"""``python -m heron_certmanager``: settings, logging, then the certmanager until SIGTERM."""

import asyncio
import signal
import sys

import structlog
from pydantic import ValidationError

from heron_bus.errors import BusError
from heron_certmanager.app import run
from heron_certmanager.settings import CertmanagerSettings
from heron_core.errors import ConfigError
from heron_core.logging import configure_logging

log = structlog.get_logger(__name__)


def main() -> None:
    try:
        settings = CertmanagerSettings()
        settings.directory_url  # noqa: B018  (refused now, not once running)
    except (ConfigError, ValidationError) as exc:
        print(f"heron-certmanager: {exc}", file=sys.stderr)  # noqa: T201  (logging is not set up yet)
        sys.exit(2)
    configure_logging("certmanager", level=settings.log_level, fmt=settings.log_format)
    try:
        asyncio.run(_until_signalled(settings))
    except asyncio.CancelledError:
        log.info("certmanager stopped")
    except BusError as exc:  # NATS refused or went away for good
        log.error("certmanager stopped", reason=str(exc))
        sys.exit(1)


async def _until_signalled(settings: CertmanagerSettings) -> None:
    main_task = asyncio.current_task()
    assert main_task is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, main_task.cancel)
    await run(settings)


if __name__ == "__main__":
    main()
