"""``/api/setup-keys``: what agents log in with (shown once, stored hashed)."""

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, Field, StrictBool, StrictInt, StringConstraints

from heron_core.service import StrictModel
from heron_core.types import SetupKeyState, SetupKeyType
from heron_management import setup_keys
from heron_management.api.deps import ObjectId, PrincipalDep, SessionDep
from heron_management.db.columns import utcnow
from heron_management.db.tables import SetupKeyRow
from heron_management.domain.setup_keys import MAX_SETUP_KEY_EXPIRY_S

router = APIRouter(prefix="/api/setup-keys", tags=["setup keys"])

MAX_USAGE_LIMIT = 1_000_000
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]


class SetupKey(BaseModel):
    id: str
    name: str
    type: SetupKeyType
    key: str = Field(
        description="the key's first characters (`hsk_Ab3d…`); the whole key is in the create "
        "response only"
    )
    expires_at: datetime | None = Field(description="when it stops admitting peers; null: never")
    revoked: bool
    used_times: int = Field(description="how many peers it registered (re-logins do not count)")
    last_used_at: datetime | None
    usage_limit: int = Field(description="how many peers it may register; 0: no limit")
    valid: bool = Field(description="whether it admits a new peer now (`state` is `valid`)")
    state: SetupKeyState
    created_at: datetime
    updated_at: datetime


class SetupKeyCreated(SetupKey):
    key: str = Field(description="the whole key: shown only in this response")


class SetupKeyCreate(StrictModel):
    name: Name
    type: SetupKeyType = SetupKeyType.REUSABLE
    expires_in: StrictInt = Field(
        default=0,
        ge=0,
        le=MAX_SETUP_KEY_EXPIRY_S,
        description="seconds until it expires, at most a year; 0: never",
    )
    usage_limit: StrictInt = Field(
        default=0,
        ge=0,
        le=MAX_USAGE_LIMIT,
        description="reusable keys: how many peers it may register; 0: no limit. One-off: 1",
    )


class SetupKeyUpdate(StrictModel):
    name: Name | None = None
    revoked: StrictBool | None = Field(
        default=None, description="true revokes the key for good (it cannot be un-revoked)"
    )


_STORED = {
    "id", "name", "expires_at", "revoked", "used_times", "last_used_at", "usage_limit",
    "created_at", "updated_at",
}  # fmt: skip


def _setup_key(row: SetupKeyRow, *, key: str | None = None) -> SetupKey:
    state = setup_keys.state_of(row, utcnow())
    fields = row.model_dump(include=_STORED)
    model = SetupKeyCreated if key else SetupKey
    return model(
        **fields,
        type=SetupKeyType(row.type),
        key=key or row.hint,
        valid=state is SetupKeyState.VALID,
        state=state,
    )


@router.get("", summary="List setup keys")
async def list_setup_keys(session: SessionDep, principal: PrincipalDep) -> list[SetupKey]:
    return [_setup_key(row) for row in await setup_keys.list_setup_keys(session, principal)]


@router.post("", status_code=status.HTTP_201_CREATED, summary="Create a setup key")
async def create_setup_key(
    body: SetupKeyCreate, session: SessionDep, principal: PrincipalDep
) -> SetupKeyCreated:
    new = await setup_keys.create_setup_key(
        session,
        principal,
        name=body.name,
        key_type=body.type,
        expires_in=timedelta(seconds=body.expires_in) if body.expires_in else None,
        usage_limit=body.usage_limit,
    )
    created = _setup_key(new.row, key=new.plain)
    assert isinstance(created, SetupKeyCreated)
    return created


@router.get("/{setup_key_id}", summary="Get a setup key")
async def get_setup_key(
    setup_key_id: ObjectId, session: SessionDep, principal: PrincipalDep
) -> SetupKey:
    return _setup_key(await setup_keys.get_setup_key(session, principal, setup_key_id))


@router.put("/{setup_key_id}", summary="Rename or revoke a setup key")
async def update_setup_key(
    setup_key_id: ObjectId, body: SetupKeyUpdate, session: SessionDep, principal: PrincipalDep
) -> SetupKey:
    row = await setup_keys.update_setup_key(
        session, principal, setup_key_id, name=body.name, revoked=body.revoked
    )
    return _setup_key(row)


@router.delete(
    "/{setup_key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a setup key (the peers it registered stay)",
)
async def delete_setup_key(
    setup_key_id: ObjectId, session: SessionDep, principal: PrincipalDep
) -> Response:
    await setup_keys.delete_setup_key(session, principal, setup_key_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
