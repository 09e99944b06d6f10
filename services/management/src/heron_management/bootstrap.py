"""A fresh install's default account and its owner token.

``HERON_ADMIN_TOKEN`` names the owner's token and is kept in force on every start (changing it
replaces the old one). Without it, the first start generates a token and prints it once.
"""

import sys

import structlog
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from heron_core.types import Role
from heron_management.db.tables import AccountRow, ApiTokenRow, UserRow
from heron_management.domain.api_tokens import token_hash
from heron_management.identity import add_token, create_account

log = structlog.get_logger(__name__)

DEFAULT_OWNER_EMAIL = "owner@heron.local"
ENV_TOKEN_NAME = "HERON_ADMIN_TOKEN"  # noqa: S105  (a token's name, not a secret)
GENERATED_TOKEN_NAME = "bootstrap"  # noqa: S105


async def bootstrap(sessions: async_sessionmaker[AsyncSession], admin_token: str | None) -> None:
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
            return
        if admin_token is not None:
            await _keep_env_token(session, account, admin_token)


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
