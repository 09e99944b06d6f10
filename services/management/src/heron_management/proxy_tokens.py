"""Proxy tokens: the use cases behind ``/api/proxy-tokens`` (owners and admins only).

An edge presents one on its config stream; it serves the services of the token's account. The
token is shown once and stored as its SHA-256. Revoking deletes it: its edges are disconnected
(``ProxyTokenRevoked``) and cannot come back with it.
"""

from dataclasses import dataclass
from datetime import timedelta

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from heron_core.events import ProxyTokenRevoked
from heron_core.ids import new_id
from heron_core.types import AccountId, ProxyTokenId
from heron_management.db.columns import utcnow
from heron_management.db.tables import ProxyTokenRow
from heron_management.domain.api_tokens import (
    PROXY_TOKEN_PREFIX,
    generate_token,
    token_hash,
    token_hint,
)
from heron_management.domain.permissions import Action
from heron_management.domain.principal import Principal
from heron_management.errors import AuthenticationError, NotFoundError
from heron_management.events import add_event

LAST_USED_RESOLUTION = timedelta(minutes=1)  # one write a minute per token, as API tokens do


@dataclass(frozen=True)
class NewProxyToken:
    row: ProxyTokenRow
    plain: str


async def list_proxy_tokens(session: AsyncSession, principal: Principal) -> list[ProxyTokenRow]:
    principal.require(Action.MANAGE_PROXY_TOKENS)
    query = select(ProxyTokenRow).where(ProxyTokenRow.account_id == principal.account_id)
    return list(
        (
            await session.exec(query.order_by(col(ProxyTokenRow.created_at), col(ProxyTokenRow.id)))
        ).all()
    )


async def get_proxy_token(
    session: AsyncSession, principal: Principal, token_id: str
) -> ProxyTokenRow:
    principal.require(Action.MANAGE_PROXY_TOKENS)
    row = await session.get(ProxyTokenRow, token_id)
    if row is None or row.account_id != principal.account_id:
        raise NotFoundError("proxy token", token_id)
    return row


async def create_proxy_token(
    session: AsyncSession, principal: Principal, *, name: str
) -> NewProxyToken:
    principal.require(Action.MANAGE_PROXY_TOKENS)
    plain = generate_token(PROXY_TOKEN_PREFIX)
    row = ProxyTokenRow(
        id=new_id("ptk"),
        account_id=principal.account_id,
        name=name,
        secret_hash=token_hash(plain),
        hint=token_hint(plain),
        created_by=principal.user_id,
    )
    session.add(row)
    await session.commit()
    return NewProxyToken(row=row, plain=plain)


async def revoke_proxy_token(session: AsyncSession, principal: Principal, token_id: str) -> None:
    row = await get_proxy_token(session, principal, token_id)
    add_event(
        session,
        ProxyTokenRevoked(
            account_id=AccountId(row.account_id), proxy_token_id=ProxyTokenId(row.id)
        ),
    )
    await session.delete(row)
    await session.commit()


async def authenticate_edge(session: AsyncSession, plain: str) -> ProxyTokenRow:
    """The proxy token ``plain`` names; AuthenticationError when there is none (or no more)."""
    row = (
        await session.exec(
            select(ProxyTokenRow).where(ProxyTokenRow.secret_hash == token_hash(plain))
        )
    ).first()
    if row is None:
        raise AuthenticationError("the proxy token is not valid (unknown or revoked)")
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
        row.last_used_at = now
        session.add(row)
        await session.commit()
    return row
