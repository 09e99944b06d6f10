"""``create_app(settings)``: the one place that wires management together."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version
from typing import Any

from fastapi import FastAPI

from heron_core.tasks import spawn
from heron_management.api import health, network, services, tokens, users
from heron_management.api.deps import AppContext
from heron_management.api.middleware import AccessLog, BodyLimit
from heron_management.api.openapi import build_openapi
from heron_management.api.problems import install_problem_handlers
from heron_management.bootstrap import bootstrap
from heron_management.db.engine import create_engine, migrate, session_factory
from heron_management.event_bus import NatsPublisher
from heron_management.events import OutboxRelay
from heron_management.service_catalog import ServiceCatalog
from heron_management.settings import ManagementSettings


def create_app(settings: ManagementSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.resolved_database_url())
        await migrate(engine)
        sessions = session_factory(engine)
        admin_token = settings.admin_token.get_secret_value() if settings.admin_token else None
        await bootstrap(sessions, admin_token)
        publisher = NatsPublisher(settings.nats_url)
        relay = OutboxRelay(sessions, publisher)
        app.state.context = AppContext(sessions=sessions, services=ServiceCatalog(relay.notify))
        relay_task = spawn(relay.run(), name="outbox-relay")
        try:
            yield
        finally:
            relay_task.cancel()
            await publisher.close()
            await engine.dispose()

    app = FastAPI(
        title="Heron management API",
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    install_problem_handlers(app)
    for module in (health, services, users, tokens, network):
        app.include_router(module.router)
    package_version = version("heron-management")

    def openapi() -> dict[str, Any]:
        return build_openapi(app, version=package_version)

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(BodyLimit, max_bytes=settings.management_max_body_bytes)
    app.add_middleware(AccessLog)
    return app
