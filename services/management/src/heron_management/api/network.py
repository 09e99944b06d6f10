"""``/api/peers`` and ``/api/networks``: what service targets point at (read-only in this slice)."""

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field

from heron_core.types import ResourceType
from heron_management import network
from heron_management.api.deps import ObjectId, PrincipalDep, SessionDep
from heron_management.db.tables import NetworkRow, PeerRow

router = APIRouter(tags=["network"])


class Peer(BaseModel):
    id: str
    name: str
    overlay_address: str | None = Field(description="the peer's address in 100.64.0.0/10")
    wireguard_public_key: str | None
    connected: bool
    last_seen: datetime | None
    version: str | None
    created_at: datetime


class Network(BaseModel):
    id: str
    name: str
    description: str
    created_at: datetime


class NetworkResource(BaseModel):
    id: str
    network_id: ObjectId
    name: str
    type: ResourceType
    address: str = Field(description="host IP, domain name or subnet CIDR")
    service_count: int = Field(description="how many services target this resource")
    created_at: datetime


def _peer(row: PeerRow) -> Peer:
    return Peer.model_validate(row, from_attributes=True)


def _network(row: NetworkRow) -> Network:
    return Network.model_validate(row, from_attributes=True)


def _resource(view: network.ResourceView) -> NetworkResource:
    return NetworkResource(
        **view.row.model_dump(include={"id", "network_id", "name", "address", "created_at"}),
        type=ResourceType(view.row.type),
        service_count=view.service_count,
    )


@router.get("/api/peers", summary="List peers", tags=["peers"])
async def list_peers(session: SessionDep, principal: PrincipalDep) -> list[Peer]:
    return [_peer(row) for row in await network.list_peers(session, principal)]


@router.get("/api/peers/{peer_id}", summary="Get a peer", tags=["peers"])
async def get_peer(peer_id: ObjectId, session: SessionDep, principal: PrincipalDep) -> Peer:
    return _peer(await network.get_peer(session, principal, peer_id))


@router.get("/api/networks", summary="List networks", tags=["networks"])
async def list_networks(session: SessionDep, principal: PrincipalDep) -> list[Network]:
    return [_network(row) for row in await network.list_networks(session, principal)]


@router.get("/api/networks/{network_id}", summary="Get a network", tags=["networks"])
async def get_network(
    network_id: ObjectId, session: SessionDep, principal: PrincipalDep
) -> Network:
    return _network(await network.get_network(session, principal, network_id))


@router.get(
    "/api/networks/{network_id}/resources", summary="List a network's resources", tags=["networks"]
)
async def list_resources(
    network_id: ObjectId, session: SessionDep, principal: PrincipalDep
) -> list[NetworkResource]:
    return [_resource(v) for v in await network.list_resources(session, principal, network_id)]


@router.get(
    "/api/networks/{network_id}/resources/{resource_id}",
    summary="Get a network resource",
    tags=["networks"],
)
async def get_resource(
    network_id: ObjectId, resource_id: ObjectId, session: SessionDep, principal: PrincipalDep
) -> NetworkResource:
    return _resource(await network.get_resource(session, principal, network_id, resource_id))
