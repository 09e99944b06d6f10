"""``/api/networks``, their ``/resources`` (what service targets name) and ``/routers`` (the
peers that reach them)."""

from datetime import datetime
from typing import Annotated, Any, Self

from fastapi import APIRouter, Response, status
from pydantic import (
    BaseModel,
    Field,
    StrictBool,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from heron_core.service import StrictModel
from heron_core.types import ResourceType
from heron_management import network
from heron_management.api.deps import ObjectId, PrincipalDep, SessionDep
from heron_management.db.tables import RouterRow
from heron_management.domain.resources import infer_type, normalize_address

router = APIRouter(prefix="/api/networks", tags=["networks"])

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]
Description = Annotated[str, StringConstraints(strip_whitespace=True, max_length=1024)]


class Network(BaseModel):
    id: str
    name: str
    description: str
    resources: list[str] = Field(description="the IDs of its resources")
    routers: list[str] = Field(description="the IDs of its routers")
    routing_peers_count: int = Field(description="how many enabled routers it has")
    created_at: datetime


class NetworkRequest(StrictModel):
    name: Name
    description: Description = ""


class NetworkResource(BaseModel):
    id: str
    network_id: str
    name: str
    description: str
    type: ResourceType
    address: str = Field(description="host IP, domain name or subnet CIDR")
    service_count: int = Field(description="how many services target this resource")
    created_at: datetime


class ResourceRequest(StrictModel):
    name: Name
    description: Description = ""
    type: ResourceType | None = Field(
        default=None, description="host, domain or subnet; absent: inferred from the address"
    )
    address: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)
    ] = Field(description="host: one IP address; domain: a domain name; subnet: a CIDR")

    @field_validator("address")
    @classmethod
    def _address_fits_type(cls, address: str, info: ValidationInfo) -> str:
        return normalize_address(info.data.get("type") or infer_type(address), address)

    @model_validator(mode="after")
    def _type_from_address(self) -> Self:
        if self.type is None:
            self.type = infer_type(self.address)
        return self

    def spec(self) -> network.ResourceSpec:
        assert self.type is not None  # set by the validator
        return network.ResourceSpec(
            name=self.name, description=self.description, type=self.type, address=self.address
        )


class NetworkRouter(BaseModel):
    id: str
    network_id: str
    peer_id: str = Field(description="the peer whose agent dials the network's resources")
    enabled: bool
    created_at: datetime


class RouterRequest(StrictModel):
    peer_id: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        description="a peer of this account"
    )
    enabled: StrictBool = True


def _network(view: network.NetworkView) -> Network:
    return Network(
        **view.row.model_dump(include={"id", "name", "description", "created_at"}),
        resources=view.resource_ids,
        routers=view.router_ids,
        routing_peers_count=view.routing_peers_count,
    )


def _resource(view: network.ResourceView) -> NetworkResource:
    fields: dict[str, Any] = view.row.model_dump(
        include={"id", "network_id", "name", "description", "address", "created_at"}
    )
    return NetworkResource(
        **fields, type=ResourceType(view.row.type), service_count=view.service_count
    )


def _router(row: RouterRow) -> NetworkRouter:
    return NetworkRouter.model_validate(row, from_attributes=True)


# networks


@router.get("", summary="List networks")
async def list_networks(session: SessionDep, principal: PrincipalDep) -> list[Network]:
    return [_network(view) for view in await network.list_networks(session, principal)]


@router.post("", status_code=status.HTTP_201_CREATED, summary="Create a network")
async def create_network(
    body: NetworkRequest, session: SessionDep, principal: PrincipalDep
) -> Network:
    view = await network.create_network(
        session, principal, name=body.name, description=body.description
    )
    return _network(view)


@router.get("/{network_id}", summary="Get a network")
async def get_network(
    network_id: ObjectId, session: SessionDep, principal: PrincipalDep
) -> Network:
    return _network(await network.get_network(session, principal, network_id))


@router.put("/{network_id}", summary="Rename or describe a network")
async def update_network(
    network_id: ObjectId, body: NetworkRequest, session: SessionDep, principal: PrincipalDep
) -> Network:
    view = await network.update_network(
        session, principal, network_id, name=body.name, description=body.description
    )
    return _network(view)


@router.delete(
    "/{network_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a network with its resources and routers (refused while services target it)",
)
async def delete_network(
    network_id: ObjectId, session: SessionDep, principal: PrincipalDep
) -> Response:
    await network.delete_network(session, principal, network_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# resources


@router.get("/{network_id}/resources", summary="List a network's resources")
async def list_resources(
    network_id: ObjectId, session: SessionDep, principal: PrincipalDep
) -> list[NetworkResource]:
    return [_resource(v) for v in await network.list_resources(session, principal, network_id)]


@router.post(
    "/{network_id}/resources", status_code=status.HTTP_201_CREATED, summary="Add a resource"
)
async def create_resource(
    network_id: ObjectId, body: ResourceRequest, session: SessionDep, principal: PrincipalDep
) -> NetworkResource:
    view = await network.create_resource(session, principal, network_id, body.spec())
    return _resource(view)


@router.get("/{network_id}/resources/{resource_id}", summary="Get a network resource")
async def get_resource(
    network_id: ObjectId, resource_id: ObjectId, session: SessionDep, principal: PrincipalDep
) -> NetworkResource:
    return _resource(await network.get_resource(session, principal, network_id, resource_id))


@router.put("/{network_id}/resources/{resource_id}", summary="Replace a network resource")
async def update_resource(
    network_id: ObjectId,
    resource_id: ObjectId,
    body: ResourceRequest,
    session: SessionDep,
    principal: PrincipalDep,
) -> NetworkResource:
    view = await network.update_resource(session, principal, network_id, resource_id, body.spec())
    return _resource(view)


@router.delete(
    "/{network_id}/resources/{resource_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a network resource (refused while services target it)",
)
async def delete_resource(
    network_id: ObjectId, resource_id: ObjectId, session: SessionDep, principal: PrincipalDep
) -> Response:
    await network.delete_resource(session, principal, network_id, resource_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# routers


@router.get("/{network_id}/routers", summary="List a network's routing peers")
async def list_routers(
    network_id: ObjectId, session: SessionDep, principal: PrincipalDep
) -> list[NetworkRouter]:
    return [_router(row) for row in await network.list_routers(session, principal, network_id)]


@router.post(
    "/{network_id}/routers", status_code=status.HTTP_201_CREATED, summary="Add a routing peer"
)
async def create_router(
    network_id: ObjectId, body: RouterRequest, session: SessionDep, principal: PrincipalDep
) -> NetworkRouter:
    row = await network.create_router(
        session, principal, network_id, peer_id=body.peer_id, enabled=body.enabled
    )
    return _router(row)


@router.get("/{network_id}/routers/{router_id}", summary="Get a routing peer")
async def get_router(
    network_id: ObjectId, router_id: ObjectId, session: SessionDep, principal: PrincipalDep
) -> NetworkRouter:
    return _router(await network.get_router(session, principal, network_id, router_id))


@router.put("/{network_id}/routers/{router_id}", summary="Replace a routing peer")
async def update_router(
    network_id: ObjectId,
    router_id: ObjectId,
    body: RouterRequest,
    session: SessionDep,
    principal: PrincipalDep,
) -> NetworkRouter:
    row = await network.update_router(
        session, principal, network_id, router_id, peer_id=body.peer_id, enabled=body.enabled
    )
    return _router(row)


@router.delete(
    "/{network_id}/routers/{router_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove a routing peer (refused when services would lose their only route)",
)
async def delete_router(
    network_id: ObjectId, router_id: ObjectId, session: SessionDep, principal: PrincipalDep
) -> Response:
    await network.delete_router(session, principal, network_id, router_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
