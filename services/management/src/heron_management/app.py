"""``create_app(settings)``: the one place that wires management together."""

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from importlib.metadata import version
from typing import Any

import structlog
from fastapi import FastAPI

from heron_core.events import Event, ServiceChanged
from heron_core.tasks import spawn
from heron_management.api import (
    domains,
    health,
    network,
    peers,
    proxy_clusters,
    proxy_tokens,
    services,
    setup_keys,
    tokens,
    users,
)
from heron_management.api.deps import AppContext
from heron_management.api.middleware import AccessLog, BodyLimit
from heron_management.api.openapi import build_openapi
from heron_management.api.problems import install_problem_handlers
from heron_management.auth_records import AuthRecordsPublisher
from heron_management.bootstrap import bootstrap
from heron_management.certificate_events import CertificateEvents
from heron_management.change_feed import ChangeFeed
from heron_management.cname_lookup import CnameLookup
from heron_management.custom_domains import CustomDomainCatalog, DomainVerifier
from heron_management.db.engine import create_engine, migrate, session_factory
from heron_management.event_bus import STREAM_EVENTS, NatsEventListener, NatsPublisher
from heron_management.events import OutboxRelay, deliver_after_commit
from heron_management.grpc.deps import StreamDeps
from heron_management.grpc.server import GrpcServer
from heron_management.service_catalog import ServiceCatalog
from heron_management.settings import ManagementSettings

log = structlog.get_logger(__name__)


def create_app(settings: ManagementSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.resolved_database_url())
        await migrate(engine)
        sessions = session_factory(engine)
        admin_token = settings.admin_token.get_secret_value() if settings.admin_token else None
        edge_token = settings.management_edge_token
        await bootstrap(
            sessions, admin_token, edge_token.get_secret_value() if edge_token else None
        )
        publisher = NatsPublisher(settings.nats_url)
        relay = OutboxRelay(sessions, publisher)
        feed = ChangeFeed()
        auth_records = AuthRecordsPublisher(settings.nats_url, sessions)

        def committed(events: Sequence[Event]) -> None:
            relay.notify()  # publish to NATS now, not at the next poll
            # this replica's streams learn at once; others through NATS
            feed.publish(e for e in events if isinstance(e, STREAM_EVENTS))
            heard(events)

        def heard(events: Sequence[Event]) -> None:
            if any(isinstance(e, ServiceChanged) for e in events):
                auth_records.notify()

        def from_nats(events: Sequence[Event]) -> None:
            feed.publish(events)
            heard(events)

        deliver_after_commit(sessions, committed)
        verifier = DomainVerifier(
            sessions,
            CnameLookup(settings.management_dns_resolver, settings.management_dns_timeout_s),
            recheck_s=settings.management_domain_recheck_s,
            on_commit=relay.notify,
        )
        app.state.context = AppContext(
            sessions=sessions,
            services=ServiceCatalog(relay.notify),
            domains=CustomDomainCatalog(relay.notify, verifier.request),
        )
        grpc_server = GrpcServer(
            settings.management_grpc_host,
            settings.management_grpc_port,
            StreamDeps(
                sessions=sessions,
                feed=feed,
                snapshot_batch_size=settings.management_snapshot_batch_size,
            ),
        )
        tasks = [
            spawn(relay.run(), name="outbox-relay"),
            spawn(NatsEventListener(settings.nats_url, from_nats).run(), name="event-listener"),
            spawn(auth_records.run(), name="auth-records"),
            spawn(CertificateEvents(settings.nats_url, sessions).run(), name="certificate-events"),
            spawn(verifier.run(), name="domain-verifier"),
        ]
        await grpc_server.start()
        log.info("gRPC listening", address=grpc_server.address)
        try:
            yield
        finally:
            await grpc_server.stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)  # let them close their connections
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
    for module in (
        health,
        services,
        users,
        tokens,
        peers,
        network,
        setup_keys,
        proxy_tokens,
        proxy_clusters,
        domains,
    ):
        app.include_router(module.router)
    package_version = version("heron-management")

    def openapi() -> dict[str, Any]:
        return build_openapi(app, version=package_version)

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(BodyLimit, max_bytes=settings.management_max_body_bytes)
    app.add_middleware(AccessLog)
    return app
