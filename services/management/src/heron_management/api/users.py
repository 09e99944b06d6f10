"""``/api/users``: the people and machines of an account, and their roles."""

from datetime import datetime
from typing import Annotated

from email_validator import EmailNotValidError, validate_email
from fastapi import APIRouter, Response, status
from pydantic import AfterValidator, BaseModel, Field, StringConstraints

from heron_core.service import StrictModel, normalize_domain
from heron_core.types import Role
from heron_management import identity
from heron_management.api.deps import ObjectId, PrincipalDep, SessionDep
from heron_management.db.tables import UserRow

router = APIRouter(prefix="/api/users", tags=["users"])


def _email(value: str) -> str:
    """A syntactically valid address, lower-cased; private domains (``corp.internal``) are fine.

    Self-hosted deployments name people at domains no public DNS knows, so the domain is only
    checked for syntax, as a service domain is, never for deliverability or special use.
    """
    local, at, domain = value.rpartition("@")
    if not at or not local:
        raise ValueError("not a valid email address: it needs a name, an @ and a domain")
    try:
        # the local part's rules (quoting, dots, length) are email_validator's to know
        validate_email(f"{local}@example.com", check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(f"not a valid email address: {exc}") from exc
    try:
        domain = normalize_domain(domain)
    except ValueError as exc:
        raise ValueError(f"not a valid email address: {exc}") from exc
    return f"{local.lower()}@{domain}"


Email = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=3, max_length=320),
    AfterValidator(_email),
    Field(json_schema_extra={"format": "email"}),
]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]


class User(BaseModel):
    id: str
    email: str
    name: str
    role: Role
    created_at: datetime


class UserCreate(StrictModel):
    email: Email
    name: Name
    role: Role


class UserUpdate(StrictModel):
    name: Name | None = None
    role: Role | None = None


def _user(row: UserRow) -> User:
    return User(
        id=row.id, email=row.email, name=row.name, role=Role(row.role), created_at=row.created_at
    )


@router.get("", summary="List users")
async def list_users(session: SessionDep, principal: PrincipalDep) -> list[User]:
    return [_user(row) for row in await identity.list_users(session, principal)]


@router.post("", status_code=status.HTTP_201_CREATED, summary="Create a user")
async def create_user(body: UserCreate, session: SessionDep, principal: PrincipalDep) -> User:
    row = await identity.create_user(
        session, principal, email=body.email, name=body.name, role=body.role
    )
    return _user(row)


@router.get("/{user_id}", summary="Get a user")
async def get_user(user_id: ObjectId, session: SessionDep, principal: PrincipalDep) -> User:
    return _user(await identity.get_user(session, principal, user_id))


@router.put("/{user_id}", summary="Change a user's name or role")
async def update_user(
    user_id: ObjectId, body: UserUpdate, session: SessionDep, principal: PrincipalDep
) -> User:
    row = await identity.update_user(session, principal, user_id, name=body.name, role=body.role)
    return _user(row)


@router.delete("/{user_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a user")
async def delete_user(user_id: ObjectId, session: SessionDep, principal: PrincipalDep) -> Response:
    await identity.delete_user(session, principal, user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
