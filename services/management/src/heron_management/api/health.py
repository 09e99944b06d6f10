"""Liveness and readiness, for the stack runner and orchestrators; no token needed."""

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import text

from heron_management.api.deps import SessionDep

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str


@router.get("/healthz", summary="The process is alive")
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", summary="The database answers and the schema is migrated")
async def readyz(session: SessionDep) -> Health:
    connection = await session.connection()
    await connection.execute(text("SELECT 1"))
    return Health(status="ready")
