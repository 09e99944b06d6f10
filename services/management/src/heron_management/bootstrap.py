"""A fresh install's default account, its owner token and the embedded edge's proxy token.

``HERON_ADMIN_TOKEN`` names the owner's token and is kept in force on every start (changing it
replaces the old one). Without it, the first start generates a token and prints it once.

``HERON_MANAGEMENT_EDGE_TOKEN`` is the proxy token of the edge that runs next to management
(``heron-stack`` makes one per start and gives it to both): a proxy token of the default account
named ``embedded edge``, stored hashed like those of ``/api/proxy-tokens``. Only one is in force:
a new value replaces the old token, and without the variable none is left, so a token made for
one run of the stack never outlives it. Replaced tokens are revoked as the API revokes them
(``ProxyTokenRevoked``), which ends their edges' streams on every replica.
"""

import sys

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from heron_core.events import ProxyTokenRevoked
from heron_core.ids import new_id
from heron_core.types import AccountId, ProxyTokenId, Role
from heron_management.db.tables import AccountRow, ApiTokenRow, ProxyTokenRow, UserRow
from heron_management.domain.api_tokens import token_hash, token_hint
from heron_management.events import add_event
from heron_management.identity import add_token, create_account

log = structlog.get_logger(__name__)

DEFAULT_OWNER_EMAIL = "owner@heron.local"
ENV_TOKEN_NAME = "HERON_ADMIN_TOKEN"  # noqa: S105  (a token's name, not a secret)
GENERATED_TOKEN_NAME = "bootstrap"  # noqa: S105
EDGE_TOKEN_NAME = "embedded edge"  # noqa: S105  (the proxy token's name, not a secret)


async def bootstrap(
    sessions: async_sessionmaker[AsyncSession],
    admin_token: str | None,
    edge_token: str | None = None,
) -> None:
    async with sessions() as session:
        account = (await session.exec(select(AccountRow).where(col(AccountRow.is_default)))).first()
        if account is None:
            account, owner = await create_account(
                session, name="default", owner_email=DEFAULT_OWNER_EMAIL, is_default=True
            )
            name = ENV_TOKEN_NAME if admin_token else GENERATED_TOKEN_NAME
            token = add_token(session, owner, name=name, plain=admin_token)
            await session.commit()
            log.info("created the default account", account_id=account.id, owner=owner.email)
            if admin_token is None:
                _print_once(token.plain)
        elif admin_token is not None:
            await _keep_env_token(session, account, admin_token)
    async with sessions() as session:
        try:
            await _keep_edge_token(session, account.id, edge_token or None)
        except IntegrityError:  # another replica stored the same token at the same moment
            await session.rollback()


async def _keep_edge_token(session: AsyncSession, account_id: str, plain: str | None) -> None:
    """Make ``plain`` the one embedded edge token of the account (None: there is none)."""
    wanted = token_hash(plain) if plain is not None else None
    managed = (
        await session.exec(
            select(ProxyTokenRow).where(
                ProxyTokenRow.account_id == account_id,
                ProxyTokenRow.name == EDGE_TOKEN_NAME,
                col(ProxyTokenRow.created_by).is_(None),  # made here, never through the API
            )
        )
    ).all()
    stale = [row for row in managed if row.secret_hash != wanted]
    for row in stale:
        revoked = ProxyTokenRevoked(
            account_id=AccountId(account_id), proxy_token_id=ProxyTokenId(row.id)
        )
        add_event(session, revoked)
        await session.delete(row)
    missing = plain is not None and len(stale) == len(managed)
    if plain is not None and missing:
        session.add(
            ProxyTokenRow(
                id=new_id("ptk"), account_id=account_id, name=EDGE_TOKEN_NAME,
                secret_hash=token_hash(plain), hint=token_hint(plain),
            )
        )  # fmt: skip
    if stale or missing:
        await session.commit()
        log.info(
            "embedded edge token in force" if plain else "embedded edge token removed",
            replaced=len(stale),
        )


async def _keep_env_token(session: AsyncSession, account: AccountRow, admin_token: str) -> None:
    if (
        await session.exec(
            select(ApiTokenRow).where(ApiTokenRow.secret_hash == token_hash(admin_token))
        )
    ).first():
        return
    owner = (
        await session.exec(
            select(UserRow)
            .where(UserRow.account_id == account.id, UserRow.role == Role.OWNER)
            .order_by(col(UserRow.created_at))
        )
    ).first()
    if owner is None:
        log.error("the default account has no owner: HERON_ADMIN_TOKEN not applied")
        return
    stale = await session.exec(
        select(ApiTokenRow).where(
            ApiTokenRow.user_id == owner.id, ApiTokenRow.name == ENV_TOKEN_NAME
        )
    )
    for row in stale:
        await session.delete(row)
    add_token(session, owner, name=ENV_TOKEN_NAME, plain=admin_token)
    await session.commit()
    log.info("HERON_ADMIN_TOKEN changed: replaced the owner's token", owner=owner.email)


def _print_once(token: str) -> None:
    # Deliberately not a log line: logs are shipped and kept, this secret must not be.
    print(  # noqa: T201
        "\n"
        "  Heron created the default account. Its owner API token (shown only this once):\n\n"
        f"      {token}\n\n"
        "  Use it as:  Authorization: Token <token>\n",
        file=sys.stderr,
        flush=True,
    )
