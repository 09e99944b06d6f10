"""``/healthz/live``, ``/healthz/ready`` and ``/domains`` on the certmanager's own address.

Ready: connected to NATS and both mirrors caught up. ``/domains`` is what the certmanager
knows per domain (wanted, certificate validity and renewal time, failures, the CA's last
reason, the next try): where to look when a certificate does not come. Plain HTTP/1.1, one
request per connection, for curl and the stack's readiness check.
"""

import asyncio
import json
from collections.abc import Callable
from contextlib import suppress
from http import HTTPStatus
from typing import Any

#: a request's head must arrive whole within this
READ_TIMEOUT_S = 5.0

Route = Callable[[], tuple[HTTPStatus, Any]]


class HealthServer:
    def __init__(self, host: str, port: int, routes: dict[str, Route]) -> None:
        self._host = host
        self._port = port
        self._routes = routes
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        bound: int = self._server.sockets[0].getsockname()[1]
        return bound

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._answer, self._host, self._port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with suppress(
            OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError
        ):
            async with asyncio.timeout(READ_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            _, path, *_ = [*head.decode("latin-1").split(" ", 2), "", ""]
            route = self._routes.get(path.partition("?")[0])
            status, body = route() if route else (HTTPStatus.NOT_FOUND, {"paths": [*self._routes]})
            data = json.dumps(body, default=str).encode()
            writer.write(
                f"HTTP/1.1 {status.value} {status.phrase}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(data)}\r\nconnection: close\r\n\r\n".encode()
                + data
            )
            await writer.drain()
        writer.close()
