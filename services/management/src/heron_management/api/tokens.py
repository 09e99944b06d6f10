"""``/api/tokens``: API tokens, stored hashed and shown once."""

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, Field, StrictInt, StringConstraints

from heron_core.service import StrictModel
from heron_management import identity
from heron_management.api.deps import ObjectId, PrincipalDep, SessionDep
from heron_management.db.tables import ApiTokenRow

router = APIRouter(prefix="/api/tokens", tags=["tokens"])

MAX_EXPIRY_S = 10 * 365 * 24 * 3600


class ApiToken(BaseModel):
    id: str
    name: str
    user_id: str
    hint: str = Field(description="the first characters, to tell tokens apart")
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None


class ApiTokenCreated(ApiToken):
    plain_token: str = Field(description="the token itself: shown only in this response")


class ApiTokenCreate(StrictModel):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]
    expires_in: StrictInt = Field(
        default=0, ge=0, le=MAX_EXPIRY_S, description="seconds until it expires; 0: never"
    )
    user_id: str | None = Field(
        default=None, description="whose token (admins only); default: the caller's"
    )


def _token(row: ApiTokenRow) -> ApiToken:
    return ApiToken.model_validate(row, from_attributes=True)


@router.get("", summary="List API tokens (admins see the account's, others their own)")
async def list_tokens(session: SessionDep, principal: PrincipalDep) -> list[ApiToken]:
    return [_token(row) for row in await identity.list_tokens(session, principal)]


@router.post("", status_code=status.HTTP_201_CREATED, summary="Create an API token")
async def create_token(
    body: ApiTokenCreate, session: SessionDep, principal: PrincipalDep
) -> ApiTokenCreated:
    new = await identity.create_token(
        session,
        principal,
        name=body.name,
        expires_in=timedelta(seconds=body.expires_in) if body.expires_in else None,
        user_id=body.user_id,
    )
    return ApiTokenCreated(**_token(new.row).model_dump(), plain_token=new.plain)


@router.get("/{token_id}", summary="Get an API token")
async def get_token(token_id: ObjectId, session: SessionDep, principal: PrincipalDep) -> ApiToken:
    return _token(await identity.get_token(session, principal, token_id))


@router.delete("/{token_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Revoke an API token")
async def delete_token(
    token_id: ObjectId, session: SessionDep, principal: PrincipalDep
) -> Response:
    await identity.delete_token(session, principal, token_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
