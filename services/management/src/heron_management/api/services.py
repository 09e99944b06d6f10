"""``/api/services`` and ``/api/services/{id}/targets``."""

from fastapi import APIRouter, Response, status

from heron_core.service import Service, ServiceRequest, Target, TargetRequest
from heron_management.api.deps import ContextDep, ObjectId, PrincipalDep, SessionDep

router = APIRouter(prefix="/api/services", tags=["services"])


@router.get("", summary="List services")
async def list_services(
    session: SessionDep, principal: PrincipalDep, ctx: ContextDep
) -> list[Service]:
    return await ctx.services.list_services(session, principal)


@router.post("", status_code=status.HTTP_201_CREATED, summary="Create a service")
async def create_service(
    body: ServiceRequest, session: SessionDep, principal: PrincipalDep, ctx: ContextDep
) -> Service:
    return await ctx.services.create(session, principal, body)


@router.get("/{service_id}", summary="Get a service")
async def get_service(
    service_id: ObjectId, session: SessionDep, principal: PrincipalDep, ctx: ContextDep
) -> Service:
    return await ctx.services.get(session, principal, service_id)


@router.put("/{service_id}", summary="Replace a service")
async def update_service(
    service_id: ObjectId,
    body: ServiceRequest,
    session: SessionDep,
    principal: PrincipalDep,
    ctx: ContextDep,
) -> Service:
    return await ctx.services.update(session, principal, service_id, body)


@router.delete("/{service_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a service")
async def delete_service(
    service_id: ObjectId, session: SessionDep, principal: PrincipalDep, ctx: ContextDep
) -> Response:
    await ctx.services.delete(session, principal, service_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{service_id}/enable", summary="Enable a service")
async def enable_service(
    service_id: ObjectId, session: SessionDep, principal: PrincipalDep, ctx: ContextDep
) -> Service:
    return await ctx.services.set_enabled(session, principal, service_id, enabled=True)


@router.post("/{service_id}/disable", summary="Disable a service (it stops answering)")
async def disable_service(
    service_id: ObjectId, session: SessionDep, principal: PrincipalDep, ctx: ContextDep
) -> Service:
    return await ctx.services.set_enabled(session, principal, service_id, enabled=False)


@router.post(
    "/{service_id}/certificate/retry",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Ask for the service's certificate again now (HTTP services)",
    description="Publishes `CertificateRequested`: the certificate manager orders the "
    "certificate without waiting for its backoff. The failure shown so far gives way to what "
    "the edges report (`certificate_pending`) until it answers. 409 for a service without a "
    "certificate (TCP, UDP, TLS passthrough).",
)
async def retry_certificate(
    service_id: ObjectId, session: SessionDep, principal: PrincipalDep, ctx: ContextDep
) -> Service:
    return await ctx.services.retry_certificate(session, principal, service_id)


@router.get("/{service_id}/targets", summary="List a service's targets")
async def list_targets(
    service_id: ObjectId, session: SessionDep, principal: PrincipalDep, ctx: ContextDep
) -> list[Target]:
    return await ctx.services.list_targets(session, principal, service_id)


@router.post("/{service_id}/targets", status_code=status.HTTP_201_CREATED, summary="Add a target")
async def add_target(
    service_id: ObjectId,
    body: TargetRequest,
    session: SessionDep,
    principal: PrincipalDep,
    ctx: ContextDep,
) -> Target:
    return await ctx.services.add_target(session, principal, service_id, body)


@router.put("/{service_id}/targets/{target_id}", summary="Replace a target")
async def replace_target(
    service_id: ObjectId,
    target_id: ObjectId,
    body: TargetRequest,
    session: SessionDep,
    principal: PrincipalDep,
    ctx: ContextDep,
) -> Target:
    return await ctx.services.replace_target(session, principal, service_id, target_id, body)


@router.delete(
    "/{service_id}/targets/{target_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove a target",
)
async def remove_target(
    service_id: ObjectId,
    target_id: ObjectId,
    session: SessionDep,
    principal: PrincipalDep,
    ctx: ContextDep,
) -> Response:
    await ctx.services.remove_target(session, principal, service_id, target_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{service_id}/targets/{target_id}/enable", summary="Enable a target")
async def enable_target(
    service_id: ObjectId,
    target_id: ObjectId,
    session: SessionDep,
    principal: PrincipalDep,
    ctx: ContextDep,
) -> Target:
    return await ctx.services.set_target_enabled(
        session, principal, service_id, target_id, enabled=True
    )


@router.post("/{service_id}/targets/{target_id}/disable", summary="Disable a target")
async def disable_target(
    service_id: ObjectId,
    target_id: ObjectId,
    session: SessionDep,
    principal: PrincipalDep,
    ctx: ContextDep,
) -> Target:
    return await ctx.services.set_target_enabled(
        session, principal, service_id, target_id, enabled=False
    )
