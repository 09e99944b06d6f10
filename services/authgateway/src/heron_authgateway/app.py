"""``create_app(settings)``: the one place that wires the auth gateway together.

The lifespan runs the ``Gateway`` (NATS, the services' records, the signing keys) in the
background and, when an issuer is configured, the OIDC client; errors become pages here, in
one place: never a traceback for the visitor.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from heron_authgateway import health, login, pages, sso
from heron_authgateway.errors import AttemptsBusyError, NotReadyError, UnknownServiceError
from heron_authgateway.gateway import Gateway
from heron_authgateway.oidc import OidcClient
from heron_authgateway.settings import AuthGatewaySettings
from heron_bus.errors import BusError
from heron_core.tasks import spawn

log = structlog.get_logger(__name__)


def create_app(settings: AuthGatewaySettings, *, client_name: str = "heron-authgateway") -> FastAPI:
    gateway = Gateway(settings, client_name=client_name)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        oidc = _oidc_client(settings)
        app.state.oidc = oidc
        runner = spawn(gateway.run(), name="gateway")
        try:
            yield
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
            if oidc is not None:
                await oidc.aclose()

    app = FastAPI(
        title="Heron auth gateway",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    app.state.oidc = None
    for module in (health, login, sso):
        app.include_router(module.router)
    _install_error_pages(app)
    app.add_middleware(SecurityHeaders)
    return app


def _oidc_client(settings: AuthGatewaySettings) -> OidcClient | None:
    if not settings.authgateway_oidc_issuer:
        return None
    secret = settings.authgateway_oidc_client_secret
    return OidcClient(
        settings.authgateway_oidc_issuer,
        settings.authgateway_oidc_client_id or "",
        secret.get_secret_value() if secret else "",
        scopes=settings.authgateway_oidc_scopes,
        groups_claim=settings.authgateway_oidc_groups_claim,
        allow_http=settings.is_development,
    )


def _install_error_pages(app: FastAPI) -> None:
    async def unknown_service(_: Request, __: Exception) -> Response:
        return pages.not_found_page()

    async def unavailable(_: Request, exc: Exception) -> Response:
        log.warning("answering unavailable", reason=str(exc))
        return pages.unavailable_page()

    async def http_error(_: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        if status == 404:
            return pages.not_found_page()
        return pages.message_page(
            "Request refused", "This request cannot be answered.", status=status
        )

    async def bad_request(_: Request, __: Exception) -> Response:
        return pages.message_page("Bad request", "This request is not valid.", status=400)

    async def failure(_: Request, exc: Exception) -> Response:
        log.error("request failed", error=repr(exc))
        return pages.message_page(
            "Something went wrong", "Sign-in failed unexpectedly. Please try again.", status=500
        )

    app.add_exception_handler(UnknownServiceError, unknown_service)
    for unavailable_kind in (NotReadyError, AttemptsBusyError, BusError):
        app.add_exception_handler(unavailable_kind, unavailable)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, bad_request)
    app.add_exception_handler(Exception, failure)


class SecurityHeaders:
    """``pages.SECURITY_HEADERS`` on every response that does not set them itself."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self._headers = [
            (name.lower().encode(), value.encode())
            for name, value in pages.SECURITY_HEADERS.items()
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(n, v) for n, v in self._headers if n not in present]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self._app(scope, receive, sending)
