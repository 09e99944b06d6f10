"""``/api/proxy-tokens``: the edges' access tokens (owners and admins only)."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, Field, StringConstraints

from heron_core.service import StrictModel
from heron_management import proxy_tokens
from heron_management.api.deps import ObjectId, PrincipalDep, SessionDep
from heron_management.db.tables import ProxyTokenRow

router = APIRouter(prefix="/api/proxy-tokens", tags=["proxy tokens"])


class ProxyToken(BaseModel):
    id: str
    name: str
    hint: str = Field(description="the first characters, to tell tokens apart")
    created_by: str | None = Field(description="the user who created it")
    created_at: datetime
    last_used_at: datetime | None = Field(description="when an edge last connected with it")


class ProxyTokenCreated(ProxyToken):
    plain_token: str = Field(
        description="the token itself (`HERON_PROXY_TOKEN` of the edges): shown only in this "
        "response"
    )


class ProxyTokenCreate(StrictModel):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]


def _token(row: ProxyTokenRow) -> ProxyToken:
    return ProxyToken.model_validate(row, from_attributes=True)


@router.get("", summary="List proxy tokens")
async def list_proxy_tokens(session: SessionDep, principal: PrincipalDep) -> list[ProxyToken]:
    return [_token(row) for row in await proxy_tokens.list_proxy_tokens(session, principal)]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create a proxy token: edges that use it serve this account",
)
async def create_proxy_token(
    body: ProxyTokenCreate, session: SessionDep, principal: PrincipalDep
) -> ProxyTokenCreated:
    new = await proxy_tokens.create_proxy_token(session, principal, name=body.name)
    return ProxyTokenCreated(**_token(new.row).model_dump(), plain_token=new.plain)


@router.get("/{proxy_token_id}", summary="Get a proxy token")
async def get_proxy_token(
    proxy_token_id: ObjectId, session: SessionDep, principal: PrincipalDep
) -> ProxyToken:
    return _token(await proxy_tokens.get_proxy_token(session, principal, proxy_token_id))


@router.delete(
    "/{proxy_token_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke a proxy token (its edges are disconnected)",
)
async def revoke_proxy_token(
    proxy_token_id: ObjectId, session: SessionDep, principal: PrincipalDep
) -> Response:
    await proxy_tokens.revoke_proxy_token(session, principal, proxy_token_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
