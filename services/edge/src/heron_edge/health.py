"""``/healthz/live`` and ``/healthz/ready`` on the health address (default ``127.0.0.1:9100``).

Live: the control process runs. Ready: the first config snapshot is applied and every data
plane listens — what a load balancer or the stack runner should wait for. The body says what
is missing, so ``curl`` shows why an edge is not ready.
"""

import asyncio
import contextlib
import json
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)

MAX_REQUEST_BYTES = 8192


class HealthServer:
    def __init__(self, host: str, port: int, problems: Callable[[], list[str]]) -> None:
        self._host = host
        self._port = port
        self._problems = problems
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self._host, self._port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5.0):
                head = await reader.readuntil(b"\r\n\r\n")
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            writer.close()
            return
        request_line = head.split(b"\r\n", 1)[0].split(b" ")
        path = request_line[1].decode("latin-1") if len(request_line) == 3 else ""
        body: dict[str, object]
        if path == "/healthz/live":
            status, body = 200, {"status": "live"}
        elif path in ("/healthz/ready", "/healthz"):
            problems = self._problems()
            status = 503 if problems else 200
            body = (
                {"status": "not ready", "problems": problems} if problems else {"status": "ready"}
            )
        else:
            status, body = (
                404,
                {"status": "not found", "paths": ["/healthz/live", "/healthz/ready"]},
            )
        data = json.dumps(body).encode()
        reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(data)}\r\nconnection: close\r\n\r\n".encode()
            + data
        )
        with contextlib.suppress(OSError):
            await writer.drain()
        writer.close()
