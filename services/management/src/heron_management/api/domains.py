"""``/api/domains``: the account's cluster domains and its custom domains with their verification."""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, Field, StringConstraints

from heron_core.service import Domain, StrictModel
from heron_management.api.deps import ContextDep, ObjectId, PrincipalDep, SessionDep
from heron_management.db.tables import CustomDomainRow
from heron_management.domain.clusters import Cluster
from heron_management.domain.custom_domains import validation_name

router = APIRouter(prefix="/api/domains", tags=["domains"])


class DomainType(StrEnum):
    FREE = "free"  # a cluster's address: services use names under it as they are
    CUSTOM = "custom"  # the account's own, verified by a CNAME


class DnsRecord(BaseModel):
    type: Literal["CNAME"] = "CNAME"
    name: str = Field(description="the name to create, e.g. `validation.example.com`")
    target: str = Field(description="what it points at: the target cluster's address")


class ProxyDomain(BaseModel):
    id: str | None = Field(
        description="custom domains: their ID; free domains: null (they are the addresses of "
        "`/api/proxy-clusters`, made by connecting edges)"
    )
    domain: str
    type: DomainType = Field(
        description="`free`: a cluster domain (services take names under it); `custom`: one of "
        "the account's own domains"
    )
    target_cluster: str | None = Field(
        description="custom: the cluster its services go to; free: null"
    )
    validated: bool = Field(
        description="services may use it: always for free domains; custom ones once the "
        "validation CNAME was found"
    )
    validation_reason: str | None = Field(
        description="custom, not verified: why the last verification did not succeed"
    )
    validated_at: datetime | None = Field(description="custom: when it was verified")
    checked_at: datetime | None = Field(
        description="custom: when the last verification ended (null: none has yet)"
    )
    validation_record: DnsRecord | None = Field(
        description="custom: the DNS record that proves the domain is this account's; services "
        "under it also need their names to resolve to the cluster (e.g. `*.<domain>` CNAME "
        "`<target_cluster>`)"
    )
    created_at: datetime | None = Field(description="custom: when it was added")


ClusterName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=253)]


class CustomDomainRequest(StrictModel):
    domain: Domain = Field(description="the account's domain, e.g. `example.com`")
    target_cluster: ClusterName | None = Field(
        default=None,
        description="the address of one of the account's clusters (`/api/proxy-clusters`); "
        "absent: the account's only cluster",
    )


def _free(cluster: Cluster) -> ProxyDomain:
    return ProxyDomain(
        id=None, domain=cluster.address, type=DomainType.FREE, target_cluster=None,
        validated=True, validation_reason=None, validated_at=None, checked_at=None,
        validation_record=None, created_at=None,
    )  # fmt: skip


def _custom(row: CustomDomainRow) -> ProxyDomain:
    return ProxyDomain(
        id=row.id,
        domain=row.domain,
        type=DomainType.CUSTOM,
        target_cluster=row.target_cluster,
        validated=row.validated,
        validation_reason=row.validation_reason,
        validated_at=row.validated_at,
        checked_at=row.checked_at,
        validation_record=DnsRecord(name=validation_name(row.domain), target=row.target_cluster),
        created_at=row.created_at,
    )


@router.get("", summary="List the cluster domains and the custom domains")
async def list_domains(
    session: SessionDep, principal: PrincipalDep, ctx: ContextDep
) -> list[ProxyDomain]:
    clusters, customs = await ctx.domains.listing(session, principal)
    return [*map(_free, clusters), *map(_custom, customs)]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Add a custom domain (its verification starts in the background)",
)
async def add_domain(
    body: CustomDomainRequest, session: SessionDep, principal: PrincipalDep, ctx: ContextDep
) -> ProxyDomain:
    return _custom(await ctx.domains.add(session, principal, body.domain, body.target_cluster))


@router.get("/{domain_id}", summary="Get a custom domain")
async def get_domain(
    domain_id: ObjectId, session: SessionDep, principal: PrincipalDep, ctx: ContextDep
) -> ProxyDomain:
    return _custom(await ctx.domains.get(session, principal, domain_id))


@router.delete(
    "/{domain_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a custom domain"
)
async def delete_domain(
    domain_id: ObjectId, session: SessionDep, principal: PrincipalDep, ctx: ContextDep
) -> Response:
    await ctx.domains.delete(session, principal, domain_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{domain_id}/validate",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Verify a custom domain's CNAME again (in the background)",
)
async def validate_domain(
    domain_id: ObjectId, session: SessionDep, principal: PrincipalDep, ctx: ContextDep
) -> ProxyDomain:
    return _custom(await ctx.domains.validate(session, principal, domain_id))
