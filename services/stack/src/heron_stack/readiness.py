"""Ready checks: one probe answers "is this service ready yet?" without waiting.

The supervisor owns the waiting (deadline, interval, noticing that the process died), so a check
is only a description for messages and a single bounded ``probe``.
"""

import asyncio
import contextlib
from typing import Protocol

import httpx

#: one probe of a local port; a listening socket on 127.0.0.1 answers in microseconds
TCP_PROBE_TIMEOUT_S = 0.5
#: one HTTP probe; a health endpoint that takes longer than this is not ready
HTTP_PROBE_TIMEOUT_S = 2.0


class ReadyCheck(Protocol):
    @property
    def description(self) -> str:
        """What must hold, for log lines and errors (e.g. ``'GET …/readyz answers 200'``)."""
        ...

    async def probe(self) -> bool:
        """True when ready; never raises for "not yet"."""
        ...


class TcpAccepting:
    """Ready when ``host:port`` accepts a TCP connection."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port

    @property
    def description(self) -> str:
        return f"{self.host}:{self.port} accepts TCP connections"

    async def probe(self) -> bool:
        return await accepts_connections(self.host, self.port)


class HttpOk:
    """Ready when ``GET url`` answers 200."""

    def __init__(self, url: str) -> None:
        self.url = url

    @property
    def description(self) -> str:
        return f"GET {self.url} answers 200"

    async def probe(self) -> bool:
        # trust_env=False: a proxy from HTTP_PROXY must never see a probe of a local port
        async with httpx.AsyncClient(trust_env=False, timeout=HTTP_PROBE_TIMEOUT_S) as client:
            try:
                response = await client.get(self.url)
            except httpx.HTTPError:
                return False
        return response.status_code == httpx.codes.OK


async def accepts_connections(host: str, port: int) -> bool:
    """True if something accepts a TCP connection on ``host:port`` right now."""
    try:
        async with asyncio.timeout(TCP_PROBE_TIMEOUT_S):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):  # a reset after our close does not change the answer
        await writer.wait_closed()
    return True
