"""``python -m heron_management``: settings, logging, then the API server."""

import sys

import structlog
import uvicorn
from pydantic import ValidationError

from heron_core.errors import ConfigError
from heron_core.logging import configure_logging
from heron_management.app import create_app
from heron_management.settings import ManagementSettings


def main() -> None:
    try:
        settings = ManagementSettings()
    except (ConfigError, ValidationError) as exc:
        print(f"heron-management: {exc}", file=sys.stderr)  # noqa: T201  (logging is not set up yet)
        sys.exit(2)
    configure_logging("management", level=settings.log_level, fmt=settings.log_format)
    structlog.get_logger(__name__).info(
        "starting", listen=f"http://{settings.management_host}:{settings.management_port}"
    )
    uvicorn.run(
        create_app(settings),
        host=settings.management_host,
        port=settings.management_port,
        log_config=None,  # our logging setup, not uvicorn's
        timeout_graceful_shutdown=10,
        proxy_headers=False,
    )


if __name__ == "__main__":
    main()
