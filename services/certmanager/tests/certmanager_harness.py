"""Real components for the certmanager's tests: Pebble and pebble-challtestsrv (Debian's
``pebble`` package) on loopback, a responder standing in for the edges, and helpers.

``Pebble`` runs the ACME server with its own TLS certificate (a trustme CA the certmanager is
told to trust) and asks ``pebble-challtestsrv`` for DNS, which answers 127.0.0.1 for every
name unless told otherwise through its management API. ``Responder`` answers the challenges
the certmanager puts into ``acme_challenges`` on the ports Pebble validates against: http-01
over plain HTTP, tls-alpn-01 with a TLS server that selects ``acme-tls/1``. It can hold a
validation until released, so a test can act mid-order.
"""

import abc
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, TypeVar

import httpx
import pytest
import trustme
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from heron_bus.bucket import Bucket
from heron_bus.connection import Bus
from heron_bus.consume import events
from heron_bus.kv import ACME_CHALLENGES, CERTIFICATES
from heron_certmanager.app import Certmanager
from heron_certmanager.settings import CertmanagerSettings
from heron_core.certificates import (
    ACME_TLS_ALPN,
    ChallengeAnswer,
    StoredCertificate,
    certificate_key,
    http01_key,
    tlsalpn01_key,
)
from heron_core.events import CertificateFailed, CertificateIssued, Event, ServiceChanged
from heron_core.ids import new_id
from heron_core.types import AccountId, ChangeKind, ServiceId, ServiceMode

T = TypeVar("T")

#: Pebble and challtestsrv start within a second; a loaded CI machine gets some margin
STARTUP_TIMEOUT_S = 20.0
#: every wait for an outcome in these tests is bounded by this unless it says otherwise
WAIT_S = 60.0
_ORDER_LOG = re.compile(r"Added order \"(?P<id>[^\"]+)\"")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def wait_for(
    check: Callable[[], Awaitable[T | None]], *, timeout_s: float = WAIT_S, what: str = ""
) -> T:
    """The first truthy result of ``check``, polled; fails the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s}s: {what or check}")
        await asyncio.sleep(0.1)


async def has_any(items: list[Any]) -> bool:
    """For ``wait_for``: whether ``items`` (say, the events seen so far) has any yet."""
    return bool(items)


async def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    writer.close()
    return True


class Started(abc.ABC):
    """``start`` on entry, ``stop`` on exit."""

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None: ...

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


class Pebble(Started):
    """Pebble with pebble-challtestsrv as its DNS, on free loopback ports, in ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        *,
        validity_s: int | None = None,
        env: dict[str, str] | None = None,
        host: str = "127.0.0.1",
        answer_ipv4: str = "127.0.0.1",
        validation_ports: tuple[int, int] | None = None,
    ) -> None:
        """``host``: where Pebble listens; ``answer_ipv4``: the address its DNS gives every
        name (where it validates); ``validation_ports``: (http-01, tls-alpn-01) ports it
        validates on, free ones by default."""
        self.workdir = workdir
        self.validity_s = validity_s
        self.env = env or {}
        self.host = host
        self.answer_ipv4 = answer_ipv4
        self.acme_port, self.management_port = free_port(), free_port()
        self.http_port, self.tls_port = validation_ports or (free_port(), free_port())
        self.dns_port, self.challtest_port = free_port(), free_port()
        self.ca = trustme.CA()
        self.ca_file = workdir / "pebble-listener-ca.pem"
        self.log_path = workdir / "pebble.log"
        self._processes: list[asyncio.subprocess.Process] = []

    @property
    def directory_url(self) -> str:
        return f"https://{self.host}:{self.acme_port}/dir"

    async def start(self) -> None:
        missing = [name for name in ("pebble", "pebble-challtestsrv") if not shutil.which(name)]
        if missing:
            pytest.fail(
                f"{', '.join(missing)} not found: install Debian's pebble package "
                "(scripts/test does, as root)"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        listener = self.ca.issue_cert(self.host, "localhost")
        listener.private_key_pem.write_to_path(str(self.workdir / "pebble-key.pem"))
        listener.cert_chain_pems[0].write_to_path(str(self.workdir / "pebble-cert.pem"))
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        config: dict[str, object] = {
            "listenAddress": f"{self.host}:{self.acme_port}",
            "managementListenAddress": f"{self.host}:{self.management_port}",
            "certificate": str(self.workdir / "pebble-cert.pem"),
            "privateKey": str(self.workdir / "pebble-key.pem"),
            "httpPort": self.http_port,
            "tlsPort": self.tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
        if self.validity_s is not None:
            config["certificateValidityPeriod"] = self.validity_s
        (self.workdir / "pebble.json").write_text(json.dumps({"pebble": config}))
        try:
            await self._spawn(
                "challtestsrv.log",
                "pebble-challtestsrv",
                "-defaultIPv4", self.answer_ipv4, "-defaultIPv6", "",
                "-dns01", f"127.0.0.1:{self.dns_port}", "-http01", "", "-https01", "",
                "-tlsalpn01", "", "-management", f"127.0.0.1:{self.challtest_port}",
            )  # fmt: skip
            await self._spawn(
                "pebble.log",
                "pebble",
                "-config", str(self.workdir / "pebble.json"),
                "-dnsserver", f"127.0.0.1:{self.dns_port}",
                "-strict",
                env={"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0",
                     "PEBBLE_AUTHZREUSE": "0", **self.env},
            )  # fmt: skip
            for port, host in ((self.challtest_port, "127.0.0.1"), (self.acme_port, self.host),
                               (self.management_port, self.host)):  # fmt: skip
                await wait_for(
                    lambda port=port, host=host: _port_open(port, host),  # type: ignore[misc]
                    timeout_s=STARTUP_TIMEOUT_S,
                    what=f"pebble port {port} open ({self.log_path.read_text()})",
                )
        except BaseException:
            await self.stop()
            raise

    async def _spawn(self, log_name: str, *argv: str, env: dict[str, str] | None = None) -> None:
        with (self.workdir / log_name).open("wb") as output:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                env={**os.environ, **(env or {})},
            )
        self._processes.append(process)

    async def stop(self) -> None:
        for process in reversed(self._processes):
            if process.returncode is None:
                process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 5)
            except TimeoutError:
                process.kill()
                await process.wait()
        self._processes.clear()

    def pause(self) -> None:
        """Freeze Pebble (not its DNS): orders wait until ``resume``."""
        self._processes[-1].send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._processes[-1].send_signal(signal.SIGCONT)

    def order_count(self) -> int:
        """Orders Pebble has created so far (it logs each one)."""
        return len(_ORDER_LOG.findall(self.log_path.read_text(errors="replace")))

    async def root_pem(self) -> bytes:
        trusted = ssl.create_default_context(cafile=str(self.ca_file))
        async with httpx.AsyncClient(verify=trusted) as client:
            response = await client.get(f"https://{self.host}:{self.management_port}/roots/0")
            response.raise_for_status()
            return response.content

    async def dns(self, action: str, **body: object) -> None:
        """Tell pebble-challtestsrv something (``set-servfail``, ``clear-servfail``, …)."""
        async with httpx.AsyncClient() as client:
            response = await client.post(
                f"http://127.0.0.1:{self.challtest_port}/{action}", json=body
            )
            response.raise_for_status()


def verify(stored: StoredCertificate, root_pem: bytes) -> x509.Certificate:
    """The leaf, after checking the chain against ``root_pem`` for ``stored.domain``."""
    leaf, *intermediates = x509.load_pem_x509_certificates(stored.chain_pem.encode())
    store = Store(x509.load_pem_x509_certificates(root_pem))
    verifier = PolicyBuilder().store(store).build_server_verifier(x509.DNSName(stored.domain))
    verifier.verify(leaf, intermediates)
    return leaf


@dataclass
class Responder(Started):
    """The edges' part of a challenge: answers from ``acme_challenges`` on Pebble's ports.

    ``hold`` set: each validation waits for ``release`` (``seen`` is set when one arrives).
    """

    bus: Bus
    http_port: int
    tls_port: int
    workdir: Path
    hold: bool = False
    seen: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    answers: dict[str, ChallengeAnswer] = field(default_factory=dict)
    _servers: list[asyncio.Server] = field(default_factory=list)
    _watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        bucket = await Bucket.open(self.bus, ACME_CHALLENGES)
        self._watch = asyncio.get_running_loop().create_task(self._follow(bucket))
        self._servers.append(await asyncio.start_server(self._http, "127.0.0.1", self.http_port))
        self._servers.append(
            await asyncio.start_server(
                self._tls, "127.0.0.1", self.tls_port, ssl=self._tls_context()
            )
        )

    async def stop(self) -> None:
        self.release.set()
        for server in self._servers:
            server.close()
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch

    async def _follow(self, bucket: Bucket) -> None:
        async for entry in bucket.watch():
            if entry is None:
                continue
            if entry.value is None:
                self.answers.pop(entry.key, None)
            else:
                self.answers[entry.key] = ChallengeAnswer.decode(entry.value)

    async def _validation(self) -> None:
        self.seen.set()
        if self.hold:
            await asyncio.wait_for(self.release.wait(), WAIT_S)

    async def _http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, TimeoutError):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            path = head.split(b" ", 2)[1].decode()
            token = path.removeprefix("/.well-known/acme-challenge/")
            await self._validation()
            answer = self.answers.get(http01_key(token))
            status, body = ("200 OK", answer.key_authorization) if answer else ("404 Not Found", "")
            writer.write(
                f"HTTP/1.1 {status}\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
                f"{body}".encode()
            )
            await writer.drain()
        writer.close()

    async def _tls(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()  # the handshake was the answer

    def _tls_context(self) -> ssl.SSLContext:
        default = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        default.set_alpn_protocols([ACME_TLS_ALPN])
        fallback = trustme.CA().issue_cert("fallback.invalid")
        fallback.configure_cert(default)

        def pick(sslobj: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
            answer = self.answers.get(tlsalpn01_key(server_name or ""))
            if answer is None or answer.cert_pem is None or answer.key_pem is None:
                return
            self.seen.set()  # the hold is not honoured here: the callback cannot wait
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.set_alpn_protocols([ACME_TLS_ALPN])
            cert_file = self.workdir / f"{answer.domain}.alpn.crt"
            key_file = self.workdir / f"{answer.domain}.alpn.key"
            cert_file.write_text(answer.cert_pem)
            key_file.write_text(answer.key_pem)
            context.load_cert_chain(cert_file, key_file)
            sslobj.context = context

        default.sni_callback = pick
        return default


class Observer(Started):
    """Every CertificateIssued and CertificateFailed, from the stream's start."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.issued: list[CertificateIssued] = []
        self.failed: list[CertificateFailed] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._collect(CertificateIssued, self.issued)),
            loop.create_task(self._collect(CertificateFailed, self.failed)),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _collect(self, event_type: type[Event], into: list[T]) -> None:
        durable = f"test-observer-{new_id('o')}".replace("_", "-")
        async with contextlib.aclosing(events(self.bus, event_type, durable=durable)) as stream:
            async for delivery in stream:
                into.append(delivery.event)  # type: ignore[arg-type]
                await delivery.ack()


def settings_for(
    pebble: Pebble, nats_url: str, data_dir: Path, **overrides: object
) -> CertmanagerSettings:
    values: dict[str, object] = {
        "mode": "development",
        "data_dir": data_dir,
        "acme_directory_url": pebble.directory_url,
        "acme_ca_file": pebble.ca_file,
        "nats_url": nats_url,
        "certmanager_instance_id": "certmanager-test",
        "certmanager_port": 0,
        "certmanager_retry_initial_s": 1.0,
        "certmanager_retry_max_s": 4.0,
        "certmanager_order_timeout_s": 30.0,
        "certmanager_challenge_propagation_s": 0.2,
        "proxy_certificate_directory": data_dir / "no-static-certificate",
        **overrides,
    }
    return CertmanagerSettings.model_validate(values)


@contextlib.asynccontextmanager
async def running(settings: CertmanagerSettings) -> AsyncIterator[Certmanager]:
    manager = await Certmanager.connect(settings)
    task = asyncio.get_running_loop().create_task(manager.run())
    try:
        await wait_for(
            lambda: _ready(manager), timeout_s=STARTUP_TIMEOUT_S, what="certmanager ready"
        )
        yield manager
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _ready(manager: Certmanager) -> bool:
    return not manager.problems()


async def publish_service(
    bus: Bus,
    domain: str,
    *,
    change: ChangeKind = ChangeKind.CREATED,
    mode: ServiceMode = ServiceMode.HTTP,
    previous_domain: str | None = None,
) -> None:
    await bus.publish(
        ServiceChanged(
            account_id=AccountId("acc_test"),
            service_id=ServiceId(new_id("svc")),
            change=change,
            domain=domain,
            previous_domain=previous_domain,
            mode=mode,
            enabled=True,
        )
    )


async def stored_certificate(bus: Bus, domain: str) -> StoredCertificate | None:
    """The certificate in the bucket for ``domain``, as an edge would read it."""
    entry = await (await Bucket.open(bus, CERTIFICATES)).get(certificate_key(domain))
    return StoredCertificate.decode(entry.value) if entry and entry.value else None
