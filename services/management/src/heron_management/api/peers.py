"""``/api/peers``: the machines running the agent (created by ``heron up``'s login)."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, Field, StringConstraints

from heron_core.service import StrictModel
from heron_management import peers
from heron_management.api.deps import ObjectId, PrincipalDep, SessionDep
from heron_management.db.columns import utcnow
from heron_management.db.tables import PeerRow
from heron_management.domain.presence import is_live

router = APIRouter(prefix="/api/peers", tags=["peers"])


class Peer(BaseModel):
    id: str
    name: str
    hostname: str = Field(description="the machine's host name at its last login")
    overlay_address: str | None = Field(description="the peer's address in 100.64.0.0/10")
    ip: str | None = Field(description="NetBird's name for overlay_address")
    wireguard_public_key: str | None
    connected: bool = Field(description="its agent's sync stream is open")
    last_seen: datetime | None
    version: str | None = Field(description="the agent's Heron version")
    created_at: datetime


class PeerUpdate(StrictModel):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]


_STORED = {
    "id", "name", "hostname", "overlay_address", "wireguard_public_key", "last_seen", "version",
    "created_at",
}  # fmt: skip


def _peer(row: PeerRow) -> Peer:
    return Peer(
        **row.model_dump(include=_STORED),
        ip=row.overlay_address,
        connected=is_live(row.connected, row.last_seen, utcnow()),
    )


@router.get("", summary="List peers")
async def list_peers(session: SessionDep, principal: PrincipalDep) -> list[Peer]:
    return [_peer(row) for row in await peers.list_peers(session, principal)]


@router.get("/{peer_id}", summary="Get a peer")
async def get_peer(peer_id: ObjectId, session: SessionDep, principal: PrincipalDep) -> Peer:
    return _peer(await peers.get_peer(session, principal, peer_id))


@router.put("/{peer_id}", summary="Rename a peer")
async def update_peer(
    peer_id: ObjectId, body: PeerUpdate, session: SessionDep, principal: PrincipalDep
) -> Peer:
    return _peer(await peers.rename_peer(session, principal, peer_id, name=body.name))


@router.delete(
    "/{peer_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a peer (refused while a service needs it)",
)
async def delete_peer(peer_id: ObjectId, session: SessionDep, principal: PrincipalDep) -> Response:
    await peers.delete_peer(session, principal, peer_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
