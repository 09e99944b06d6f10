"""Accounts, users and API tokens: who may call the API, and as what."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from heron_core.ids import new_id
from heron_core.types import AccountId, Role, TokenId, UserId
from heron_management.db.columns import utcnow
from heron_management.db.tables import AccountRow, ApiTokenRow, UserRow
from heron_management.domain.api_tokens import generate_token, token_hash, token_hint
from heron_management.domain.permissions import Action, may_assign
from heron_management.domain.principal import Principal
from heron_management.errors import (
    AuthenticationError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
)

LAST_USED_RESOLUTION = timedelta(minutes=1)  # one write a minute per token, not one per request


@dataclass(frozen=True)
class NewToken:
    row: ApiTokenRow
    plain: str


async def authenticate(session: AsyncSession, token: str) -> Principal:
    """The principal behind ``token``; AuthenticationError for unknown, expired or orphan tokens."""
    found = (
        await session.exec(
            select(ApiTokenRow, UserRow)
            .join(UserRow, col(UserRow.id) == col(ApiTokenRow.user_id))
            .where(ApiTokenRow.secret_hash == token_hash(token))
        )
    ).first()
    if found is None:
        raise AuthenticationError("the API token is not valid")
    row, user = found
    now = utcnow()
    if row.expires_at is not None and row.expires_at <= now:
        raise AuthenticationError(
            f"the API token {row.name!r} expired at {row.expires_at.isoformat()}"
        )
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
        row.last_used_at = now
        session.add(row)
        await session.commit()
    return Principal(
        account_id=AccountId(row.account_id),
        user_id=UserId(user.id),
        role=Role(user.role),
        token_id=TokenId(row.id),
    )


async def create_account(
    session: AsyncSession, *, name: str, owner_email: str, is_default: bool = False
) -> tuple[AccountRow, UserRow]:
    """A new account with its owner (the caller commits)."""
    account = AccountRow(id=new_id("acc"), name=name, is_default=is_default)
    owner = UserRow(
        id=new_id("usr"), account_id=account.id, email=owner_email, name="Owner", role=Role.OWNER
    )
    session.add(account)
    await session.flush()
    session.add(owner)
    await session.flush()
    return account, owner


def add_token(
    session: AsyncSession,
    user: UserRow,
    *,
    name: str,
    expires_at: datetime | None = None,
    plain: str | None = None,
) -> NewToken:
    """A token for ``user`` (the caller commits); ``plain`` lets an operator choose the secret."""
    secret = plain or generate_token()
    row = ApiTokenRow(
        id=new_id("tok"),
        account_id=user.account_id,
        user_id=user.id,
        name=name,
        secret_hash=token_hash(secret),
        hint=token_hint(secret),
        expires_at=expires_at,
    )
    session.add(row)
    return NewToken(row=row, plain=secret)


# users


async def list_users(session: AsyncSession, principal: Principal) -> list[UserRow]:
    principal.require(Action.READ_USERS)
    query = select(UserRow).where(UserRow.account_id == principal.account_id)
    return list(
        (await session.exec(query.order_by(col(UserRow.created_at), col(UserRow.id)))).all()
    )


async def get_user(session: AsyncSession, principal: Principal, user_id: str) -> UserRow:
    if user_id != principal.user_id:
        principal.require(Action.READ_USERS)
    return await _user_in_account(session, principal.account_id, user_id)


async def create_user(
    session: AsyncSession, principal: Principal, *, email: str, name: str, role: Role
) -> UserRow:
    principal.require(Action.MANAGE_USERS)
    _check_may_assign(principal, role)
    user = UserRow(
        id=new_id("usr"), account_id=principal.account_id, email=email, name=name, role=role
    )
    session.add(user)
    try:
        await session.commit()
    except IntegrityError as exc:
        await session.rollback()
        raise ConflictError(f"a user with email {email!r} already exists") from exc
    return user


async def update_user(
    session: AsyncSession,
    principal: Principal,
    user_id: str,
    *,
    name: str | None,
    role: Role | None,
) -> UserRow:
    principal.require(Action.MANAGE_USERS)
    user = await _user_in_account(session, principal.account_id, user_id)
    if role is not None and role is not Role(user.role):
        _check_may_assign(principal, Role(user.role))
        _check_may_assign(principal, role)
        if Role(user.role) is Role.OWNER:
            await _keep_an_owner(session, principal.account_id)
        user.role = role
    if name is not None:
        user.name = name
    session.add(user)
    await session.commit()
    return user


async def delete_user(session: AsyncSession, principal: Principal, user_id: str) -> None:
    principal.require(Action.MANAGE_USERS)
    user = await _user_in_account(session, principal.account_id, user_id)
    _check_may_assign(principal, Role(user.role))
    if Role(user.role) is Role.OWNER:
        await _keep_an_owner(session, principal.account_id)
    await session.delete(user)
    await session.commit()


def _check_may_assign(principal: Principal, role: Role) -> None:
    if not may_assign(principal.role, role):
        raise PermissionDeniedError(
            f"role {principal.role.value!r} may not manage {role.value!r} users"
        )


async def _keep_an_owner(session: AsyncSession, account_id: str) -> None:
    owners = (
        await session.exec(
            select(func.count())
            .select_from(UserRow)
            .where(UserRow.account_id == account_id, UserRow.role == Role.OWNER)
        )
    ).one()
    if owners <= 1:
        raise ConflictError("an account needs at least one owner: make another user owner first")


async def _user_in_account(session: AsyncSession, account_id: str, user_id: str) -> UserRow:
    user = await session.get(UserRow, user_id)
    if user is None or user.account_id != account_id:
        raise NotFoundError("user", user_id)
    return user


# tokens


async def list_tokens(session: AsyncSession, principal: Principal) -> list[ApiTokenRow]:
    query = select(ApiTokenRow).where(ApiTokenRow.account_id == principal.account_id)
    if not principal.may(Action.MANAGE_ALL_TOKENS):
        query = query.where(ApiTokenRow.user_id == principal.user_id)
    return list(
        (await session.exec(query.order_by(col(ApiTokenRow.created_at), col(ApiTokenRow.id)))).all()
    )


async def get_token(session: AsyncSession, principal: Principal, token_id: str) -> ApiTokenRow:
    row = await session.get(ApiTokenRow, token_id)
    if row is None or row.account_id != principal.account_id:
        raise NotFoundError("token", token_id)
    if row.user_id != principal.user_id and not principal.may(Action.MANAGE_ALL_TOKENS):
        raise NotFoundError("token", token_id)
    return row


async def create_token(
    session: AsyncSession,
    principal: Principal,
    *,
    name: str,
    expires_in: timedelta | None,
    user_id: str | None,
) -> NewToken:
    owner_id = user_id or principal.user_id
    if owner_id != principal.user_id:
        principal.require(Action.MANAGE_ALL_TOKENS)
    user = await _user_in_account(session, principal.account_id, owner_id)
    if owner_id != principal.user_id:
        _check_may_assign(principal, Role(user.role))
    new = add_token(
        session, user, name=name, expires_at=utcnow() + expires_in if expires_in else None
    )
    await session.commit()
    return new


async def delete_token(session: AsyncSession, principal: Principal, token_id: str) -> None:
    row = await get_token(session, principal, token_id)
    if row.user_id != principal.user_id:
        # revoking someone's token is managing that user: an admin may not lock an owner out
        owner = await session.get(UserRow, row.user_id)
        if owner is not None:
            _check_may_assign(principal, Role(owner.role))
    await session.delete(row)
    await session.commit()
