"""Waiting on what edges report: a service's status once the REST API shows it, and an edge's
stream once it holds the whole snapshot."""

import asyncio
import time
from typing import Any

import httpx
from grpc_clients import Stream, ack
from management_fixtures import AccountSeed, call

STATUS_WITHIN_S = 5.0
#: the proxy domain of ``Management.edge_sync``'s edges unless told otherwise
CLUSTER = "proxy.example.test"


async def add_service(
    owner: httpx.AsyncClient, account: AccountSeed, domain: str, **extra: Any
) -> Any:
    target = {"target_type": "peer", "target_id": account.peer_id, "port": 8080}
    body = {"name": "s", "domain": domain, "targets": [target], **extra}
    return await call(owner, "POST", "/api/services", 201, body)


async def synced(edge: Stream) -> Stream:
    """``edge`` once it has its setup, its peers and the whole snapshot (every batch acked)."""
    assert (await edge.read()).HasField("edge_setup")
    assert (await edge.read()).HasField("tunnel_peers")
    while True:
        batch = (await edge.read()).config_batch
        edge.send(ack(batch.sequence))
        if batch.snapshot_complete:
            return edge


async def acked_change(edge: Stream) -> None:
    """Acknowledge the batch a service change sends, so the next one may follow."""
    edge.send(ack((await edge.read(STATUS_WITHIN_S)).config_batch.sequence))


async def meta(owner: httpx.AsyncClient, service_id: str) -> dict[str, Any]:
    found: dict[str, Any] = (await call(owner, "GET", f"/api/services/{service_id}"))["meta"]
    return found


async def wait_for(
    owner: httpx.AsyncClient, service_id: str, status: str, reason_has: str = ""
) -> dict[str, Any]:
    """The service's ``meta`` once it shows ``status`` (with ``reason_has`` in its reason)."""
    deadline = time.monotonic() + STATUS_WITHIN_S
    while True:
        found = await meta(owner, service_id)
        if found["status"] == status and reason_has in (found["status_reason"] or ""):
            return found
        assert time.monotonic() < deadline, (status, reason_has, found)
        await asyncio.sleep(0.05)
