"""Setup keys: the use cases behind ``/api/setup-keys``, and the checks a login makes with one.

A key is shown once, at creation, and stored as its SHA-256 (like API tokens). A login that
registers a new peer uses one count, taken with one conditional ``UPDATE`` so that two logins
racing for a one-off key cannot both win.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from heron_core.ids import new_id
from heron_core.types import SetupKeyState, SetupKeyType
from heron_management.db.columns import utcnow
from heron_management.db.tables import SetupKeyRow
from heron_management.domain.api_tokens import (
    SETUP_KEY_PREFIX,
    generate_token,
    token_hash,
    token_hint,
)
from heron_management.domain.permissions import Action
from heron_management.domain.principal import Principal
from heron_management.domain.setup_keys import key_state, stored_usage_limit
from heron_management.errors import ConflictError, FieldProblem, InvalidRequestError, NotFoundError


@dataclass(frozen=True)
class NewSetupKey:
    row: SetupKeyRow
    plain: str


def state_of(row: SetupKeyRow, now: datetime | None = None) -> SetupKeyState:
    return key_state(
        revoked=row.revoked,
        expires_at=row.expires_at,
        used_times=row.used_times,
        usage_limit=row.usage_limit,
        now=now or utcnow(),
    )


async def list_setup_keys(session: AsyncSession, principal: Principal) -> list[SetupKeyRow]:
    principal.require(Action.READ_NETWORK)
    query = select(SetupKeyRow).where(SetupKeyRow.account_id == principal.account_id)
    return list(
        (await session.exec(query.order_by(col(SetupKeyRow.created_at), col(SetupKeyRow.id)))).all()
    )


async def get_setup_key(session: AsyncSession, principal: Principal, key_id: str) -> SetupKeyRow:
    principal.require(Action.READ_NETWORK)
    row = await session.get(SetupKeyRow, key_id)
    if row is None or row.account_id != principal.account_id:
        raise NotFoundError("setup key", key_id)
    return row


async def create_setup_key(
    session: AsyncSession,
    principal: Principal,
    *,
    name: str,
    key_type: SetupKeyType,
    expires_in: timedelta | None,
    usage_limit: int,
) -> NewSetupKey:
    principal.require(Action.MANAGE_NETWORK)
    if key_type is SetupKeyType.ONE_OFF and usage_limit > 1:
        raise InvalidRequestError(
            [FieldProblem(("usage_limit",), "a one-off key is used once: leave usage_limit at 0")]
        )
    plain = generate_token(SETUP_KEY_PREFIX)
    row = SetupKeyRow(
        id=new_id("setup"),
        account_id=principal.account_id,
        name=name,
        type=key_type,
        secret_hash=token_hash(plain),
        hint=token_hint(plain),
        expires_at=utcnow() + expires_in if expires_in else None,
        usage_limit=stored_usage_limit(key_type, usage_limit),
    )
    session.add(row)
    await session.commit()
    return NewSetupKey(row=row, plain=plain)


async def update_setup_key(
    session: AsyncSession,
    principal: Principal,
    key_id: str,
    *,
    name: str | None,
    revoked: bool | None,
) -> SetupKeyRow:
    principal.require(Action.MANAGE_NETWORK)
    row = await get_setup_key(session, principal, key_id)
    if revoked is False and row.revoked:
        raise ConflictError(f"setup key {row.name!r} is revoked for good: create a new one")
    if revoked:
        row.revoked = True
    if name is not None:
        row.name = name
    row.updated_at = utcnow()
    session.add(row)
    await session.commit()
    return row


async def delete_setup_key(session: AsyncSession, principal: Principal, key_id: str) -> None:
    """The key stops working; the peers it registered stay (they log in with their tokens)."""
    principal.require(Action.MANAGE_NETWORK)
    row = await get_setup_key(session, principal, key_id)
    await session.delete(row)
    await session.commit()


# logins


async def find_by_secret(session: AsyncSession, plain: str) -> SetupKeyRow | None:
    query = select(SetupKeyRow).where(SetupKeyRow.secret_hash == token_hash(plain))
    return (await session.exec(query)).first()


async def take_one_use(session: AsyncSession, key_id: str, now: datetime) -> bool:
    """Count one use of a valid key, atomically; False when it was not valid any more."""
    result = await session.exec(
        update(SetupKeyRow)
        .where(
            col(SetupKeyRow.id) == key_id,
            col(SetupKeyRow.revoked).is_(False),
            (col(SetupKeyRow.usage_limit) == 0)
            | (col(SetupKeyRow.used_times) < col(SetupKeyRow.usage_limit)),
            col(SetupKeyRow.expires_at).is_(None) | (col(SetupKeyRow.expires_at) > now),
        )
        .values(used_times=col(SetupKeyRow.used_times) + 1, last_used_at=now)
    )
    return bool(result.rowcount == 1)
