"""``python -m heron_authgateway``: settings, logging, then the gateway until SIGTERM."""

import sys

import structlog
import uvicorn
from pydantic import ValidationError

from heron_authgateway.app import create_app
from heron_authgateway.settings import AuthGatewaySettings
from heron_core.errors import ConfigError
from heron_core.logging import configure_logging


def main() -> None:
    try:
        settings = AuthGatewaySettings()
    except (ConfigError, ValidationError) as exc:
        print(f"heron-authgateway: {exc}", file=sys.stderr)  # noqa: T201  (logging is not set up yet)
        sys.exit(2)
    configure_logging("authgateway", level=settings.log_level, fmt=settings.log_format)
    structlog.get_logger(__name__).info(
        "starting",
        listen=f"http://{settings.authgateway_host}:{settings.authgateway_port}",
        sso=settings.sso_configured,
    )
    uvicorn.run(
        create_app(settings),
        host=settings.authgateway_host,
        port=settings.authgateway_port,
        log_config=None,  # our logging setup, not uvicorn's
        timeout_graceful_shutdown=10,
        proxy_headers=False,  # the edge's X-Forwarded-* are read by the routes, not uvicorn
        server_header=False,
    )


if __name__ == "__main__":
    main()
