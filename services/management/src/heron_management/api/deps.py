"""Dependencies the routes declare: a database session, the caller, the app's use cases."""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import APIKeyHeader
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from heron_management.custom_domains import CustomDomainCatalog
from heron_management.domain.principal import Principal
from heron_management.errors import AuthenticationError
from heron_management.identity import authenticate
from heron_management.service_catalog import ServiceCatalog

# IDs are ``svc_…``-style; anything else cannot name an object, so say so before any lookup.
ObjectId = Annotated[
    str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$", description="an object ID")
]

MAX_TOKEN_CHARS = 512  # longer is not a token; refuse before hashing it
_SCHEMES = ("token", "bearer")

_authorization = APIKeyHeader(
    name="Authorization",
    scheme_name="ApiToken",
    description="`Token <API token>` (`Bearer <API token>` is accepted too)",
    auto_error=False,
)


@dataclass(frozen=True)
class AppContext:
    """Built once by ``create_app`` and reached by routes through ``request.app.state``."""

    sessions: async_sessionmaker[AsyncSession]
    services: ServiceCatalog
    domains: CustomDomainCatalog


def _context(request: Request) -> AppContext:
    context = request.app.state.context
    assert isinstance(context, AppContext)
    return context


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    async with _context(request).sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(_session)]
ContextDep = Annotated[AppContext, Depends(_context)]


async def _principal(
    session: SessionDep, authorization: Annotated[str | None, Depends(_authorization)]
) -> Principal:
    if not authorization:
        raise AuthenticationError("no API token: send 'Authorization: Token <token>'")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() not in _SCHEMES or not token or len(token) > MAX_TOKEN_CHARS:
        raise AuthenticationError("the Authorization header must be 'Token <token>'")
    return await authenticate(session, token)


PrincipalDep = Annotated[Principal, Depends(_principal)]
