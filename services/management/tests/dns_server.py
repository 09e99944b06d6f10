"""A real DNS server for tests: ``pebble-challtestsrv`` (Debian package ``pebble``) on loopback.

It answers CNAME queries with the records set through its management API (``/set-cname``) and
every other name with no CNAME; its ACME challenge listeners stay off.
"""

import shutil
import subprocess
import time
from types import TracebackType
from typing import Self

import httpx
import pytest
from management_fixtures import free_port

EXECUTABLE = "pebble-challtestsrv"
START_WITHIN_S = 10.0


class ChallTestServer:
    def __init__(self) -> None:
        self.dns_port = free_port()
        self.management_port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def resolver(self) -> str:
        """What ``HERON_MANAGEMENT_DNS_RESOLVER`` names: this server."""
        return f"127.0.0.1:{self.dns_port}"

    def set_cname(self, host: str, target: str) -> None:
        self._post("/set-cname", {"host": f"{host}.", "target": f"{target}."})

    def clear_cname(self, host: str) -> None:
        self._post("/clear-cname", {"host": f"{host}."})

    def __enter__(self) -> Self:
        executable = shutil.which(EXECUTABLE) or shutil.which(EXECUTABLE, path="/usr/bin")
        if executable is None:
            pytest.fail(f"{EXECUTABLE} is missing: install the Debian package 'pebble'")
        self._process = subprocess.Popen(
            [
                executable,
                "-dns01", self.resolver,
                "-management", f"127.0.0.1:{self.management_port}",
                "-http01", "", "-https01", "", "-tlsalpn01", "",
                "-defaultIPv6", "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + START_WITHIN_S
        while True:
            try:
                self.clear_cname("ready.invalid")  # answers once its management API is up
                return self
            except httpx.TransportError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{EXECUTABLE} did not start") from None
                time.sleep(0.05)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)

    def _post(self, path: str, body: dict[str, str]) -> None:
        url = f"http://127.0.0.1:{self.management_port}{path}"
        response = httpx.post(url, json=body, timeout=5)
        response.raise_for_status()
