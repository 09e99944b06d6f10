"""``/healthz/live`` and ``/healthz/ready`` (ready: connected to NATS and the services read)."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from heron_authgateway.gateway import GatewayDep

router = APIRouter()


@router.get("/healthz/live")
async def live() -> JSONResponse:
    return JSONResponse({"status": "live"})


@router.get("/healthz/ready")
async def ready(gateway: GatewayDep) -> JSONResponse:
    if problems := gateway.problems():
        return JSONResponse({"status": "not ready", "problems": problems}, status_code=503)
    return JSONResponse({"status": "ready", "services": len(gateway.registry)})
