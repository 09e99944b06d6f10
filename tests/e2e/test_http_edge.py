"""An HTTP service end to end, as a user publishes one: the stack, an agent, curl over HTTPS.

    test (root ns: curl, the REST API client) --veth-- edge host --veth-- peer host
                                                       heron-stack         heron up,
                                                       (management, NATS,  a backend on
                                                        heron-edge :443)   127.0.0.1:7080

The stack runs with its embedded defaults (a local CA issues each domain's certificate) plus a
static certificate directory; the peer opens no port. Everything goes through public
interfaces: the REST API, the ``heron`` CLI, and HTTPS on the edge's main port.
"""

import asyncio
import hashlib
import json
import os
import secrets
import signal
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio
import trustme
from e2e_support import PYTHON, Hosts, Miss, free_subnet, stack_with_agent

TOKEN = "hrn_" + secrets.token_urlsafe(30)
DOMAIN = "heron.test"
BACKEND_PORT = 7080
BACKEND = Path(__file__).parents[1] / "integration" / "http_backend.py"


class Edge(Hosts):
    @property
    def static_dir(self) -> Path:
        static: Path = self.extra["static_dir"]
        return static

    @property
    def local_ca(self) -> Path:
        return self.data / "edge" / "local-ca" / "root.crt"

    async def curl(self, host: str, path: str, *, cacert: Path | None = None) -> "Answer":
        """``curl --resolve`` over HTTPS, as a user would; the status, headers and body."""
        process = await asyncio.create_subprocess_exec(
            "curl", "--silent", "--show-error", "--max-time", "10", "--include",
            "--resolve", f"{host}:443:{self.address}", "--cacert", str(cacert or self.local_ca),
            f"https://{host}{path}",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await process.communicate()
        if process.returncode != 0:
            return Answer(0, {}, err)
        head, _, body = out.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return Answer(int(lines[0].split()[1]), headers, body)

    def served_certificate(self, host: str) -> str:
        """The SHA-256 of the certificate the edge presents for ``host`` (not verified)."""
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with (
            socket.create_connection((self.address, 443), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
        assert der is not None
        return hashlib.sha256(der).hexdigest()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def echo(self) -> dict[str, Any]:
        seen: dict[str, Any] = json.loads(self.body)
        return seen

    def backend_header(self, name: str) -> list[str]:
        return [v for k, v in self.echo()["headers"] if k == name]


def write_pair(ca: trustme.CA, directory: Path, *names: str) -> str:
    """A pair for ``names`` as ``tls.crt``/``tls.key``, written whole (rename); its fingerprint."""
    issued = ca.issue_cert(*names)
    for blob, name in ((issued.cert_chain_pems[0], "tls.crt"), (issued.private_key_pem, "tls.key")):
        temporary = directory / f".{name}.new"
        blob.write_to_path(str(temporary))
        temporary.replace(directory / name)
    der = ssl.PEM_cert_to_DER_cert(issued.cert_chain_pems[0].bytes().decode())
    return hashlib.sha256(der).hexdigest()


@pytest_asyncio.fixture
async def edge(tmp_path: Path) -> AsyncIterator[Edge]:
    static_dir = tmp_path / "static"
    static_dir.mkdir()
    async with stack_with_agent(
        tmp_path, prefix="hh", subnet=free_subnet(150, 50), token=TOKEN,
        stack_env={"HERON_PROXY_DOMAIN": DOMAIN,
                   "HERON_PROXY_CERTIFICATE_DIRECTORY": str(static_dir)},
        peer_processes=[("backend", [PYTHON, str(BACKEND), "--port", str(BACKEND_PORT)])],
    ) as hosts:  # fmt: skip
        state = Edge(**{f.name: getattr(hosts, f.name) for f in fields(Hosts)})
        state.extra["static_dir"] = static_dir
        await state.eventually("the edge's local CA", lambda: _exists(state.local_ca))
        yield state


async def _exists(path: Path) -> bool:
    return await asyncio.to_thread(path.exists)


def peer_target(edge: Edge, path: str = "/") -> dict[str, Any]:
    return {"target_type": "peer", "target_id": edge.peer_id, "port": BACKEND_PORT, "path": path}


async def test_an_http_service_is_served_over_https_through_the_tunnel(edge: Edge) -> None:
    app = f"app.{DOMAIN}"
    async with edge.client() as client:
        created = await client.post(
            "/api/services",
            json={"name": "app", "domain": app,
                  "targets": [peer_target(edge), peer_target(edge, "/api")]},
        )  # fmt: skip
        assert created.status_code == 201, created.text
        service = created.json()
    url = f"/api/services/{service['id']}"

    async def answered() -> Answer | None:
        answer = await edge.curl(app, "/hello?x=1")
        return answer if answer.status == 200 else None

    first = await edge.eventually("the first HTTPS answer", answered, within_s=10)
    seen = first.echo()
    assert (seen["raw_path"], seen["query"]) == ("/hello", "x=1")
    assert first.backend_header("x-forwarded-proto") == ["https"]
    assert first.backend_header("host") == [f"127.0.0.1:{BACKEND_PORT}"]

    async def active() -> bool:
        async with edge.client() as client:
            status: str = (await client.get(url)).json()["meta"]["status"]
        return status == "active"

    await edge.eventually("status active", active, within_s=15)

    # two targets: "/" and "/api", by prefix at segment boundaries
    assert (await edge.curl(app, "/api/users")).echo()["raw_path"] == "/users"
    assert (await edge.curl(app, "/apis")).echo()["raw_path"] == "/apis"

    # disabled: a 404 within 2 s; enabled: back
    async with edge.client() as client:
        assert (await client.post(f"{url}/disable")).status_code == 200

    async def gone() -> bool | Miss:
        status = (await edge.curl(app, "/")).status
        return status == 404 or Miss(status)

    await edge.eventually("a 404 after disabling", gone, within_s=2)
    async with edge.client() as client:
        assert (await client.post(f"{url}/enable")).status_code == 200
    await edge.eventually("the service back after enabling", answered, within_s=5)

    # pass_host_header and rewrite_redirects, visibly
    before = await edge.curl(app, "/redirect")
    assert before.status == 302
    assert before.headers["location"] == f"http://127.0.0.1:{BACKEND_PORT}/landing"
    async with edge.client() as client:
        body = {k: v for k, v in service.items() if k in ("name", "domain", "targets")}
        body |= {"pass_host_header": True, "rewrite_redirects": True}
        for target in body["targets"]:
            target.pop("id", None)
        replaced = await client.put(url, json=body)
        assert replaced.status_code == 200, replaced.text

    async def host_passed() -> Answer | None:
        answer = await edge.curl(app, "/who")
        return answer if answer.status == 200 and answer.backend_header("host") == [app] else None

    await edge.eventually("the public Host at the backend", host_passed, within_s=5)
    after = await edge.curl(app, "/api/redirect")
    # the backend saw the public host, so its redirect names it; the edge puts /api back
    assert after.headers["location"] == f"http://{app}/landing"
    async with edge.client() as client:
        body["pass_host_header"] = False
        assert (await client.put(url, json=body)).status_code == 200

    async def rewritten() -> Answer | None:
        answer = await edge.curl(app, "/api/redirect")
        location = answer.headers.get("location", "")
        return answer if location == f"https://{app}/api/landing" else None

    await edge.eventually("a redirect rewritten to the public domain", rewritten, within_s=5)


async def test_a_static_certificate_is_replaced_without_a_restart(edge: Edge) -> None:
    host = f"static.{DOMAIN}"
    ca = trustme.CA()
    ca_file = edge.static_dir.parent / "static-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    first = write_pair(ca, edge.static_dir, host)
    async with edge.client() as client:
        created = await client.post(
            "/api/services", json={"name": "static", "domain": host, "targets": [peer_target(edge)]}
        )
        assert created.status_code == 201, created.text

    async def served(fingerprint: str) -> bool:
        try:
            seen: str = await asyncio.to_thread(edge.served_certificate, host)
        except OSError:  # the edge's workers may not listen yet
            return False
        return seen == fingerprint

    await edge.eventually("the static certificate", lambda: served(first), within_s=10)
    assert (await edge.curl(host, "/", cacert=ca_file)).status == 200

    second = write_pair(ca, edge.static_dir, host)
    await edge.eventually("the replaced certificate", lambda: served(second), within_s=5)

    (edge.static_dir / "tls.crt").write_bytes(b"-----BEGIN CERTIFICATE-----\nnot a certificate\n")
    refused_line = '"certificate refused'

    async def refused() -> bool:
        return any(refused_line in p.read_text(errors="replace") for p in edge.logs.glob("*.log"))

    await edge.eventually("the corrupt file refused in the log", refused, within_s=10)
    assert await served(second)
    assert (await edge.curl(host, "/", cacert=ca_file)).status == 200


def edge_control_pid(edge: Edge) -> int:
    """The heron-edge control process in the edge host (not a worker, not another test's)."""
    return pid_in(edge, b"heron_edge")


def pid_in(edge: Edge, module: bytes) -> int:
    """The process started as ``python -m <module>`` in the edge host."""
    edge_netns = Path(f"/run/netns/{edge.edge.name}").stat().st_ino
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            netns = (entry / "ns" / "net").stat().st_ino
        except OSError:
            continue
        if netns == edge_netns and module in argv:
            return int(entry.name)
    raise AssertionError(f"no {module.decode()} process found")


async def test_a_restarted_edge_serves_again_within_seconds(edge: Edge) -> None:
    """An edge that dies loses its WireGuard sessions while the agents keep theirs; it must not
    wait for them to age out (two minutes) before it serves again."""
    app = f"again.{DOMAIN}"
    async with edge.client() as client:
        created = await client.post(
            "/api/services", json={"name": "again", "domain": app, "targets": [peer_target(edge)]}
        )
        assert created.status_code == 201, created.text

    async def answered() -> bool:
        return (await edge.curl(app, "/")).status == 200

    await edge.eventually("the service", answered, within_s=15)
    await asyncio.sleep(3)  # the edge has written down the agent's endpoint by now
    os.kill(edge_control_pid(edge), signal.SIGKILL)  # the stack starts a new one
    await edge.eventually("the service after the edge's restart", answered, within_s=20)


async def test_the_edge_keeps_serving_while_management_is_down(edge: Edge) -> None:
    app = f"steady.{DOMAIN}"
    async with edge.client() as client:
        created = await client.post(
            "/api/services", json={"name": "steady", "domain": app, "targets": [peer_target(edge)]}
        )
        assert created.status_code == 201, created.text

    async def answered() -> bool:
        return (await edge.curl(app, "/")).status == 200

    await edge.eventually("the service", answered, within_s=15)
    runner = pid_in(edge, b"heron_stack")
    os.kill(runner, signal.SIGSTOP)  # so that it does not start management again at once
    try:
        os.kill(pid_in(edge, b"heron_management"), signal.SIGKILL)
        for _ in range(10):  # the config stream is gone; the edge serves its last table
            assert await answered()
            await asyncio.sleep(0.3)
    finally:
        os.kill(runner, signal.SIGCONT)

    async def active_again() -> bool:
        try:
            async with edge.client() as client:
                services = (await client.get("/api/services")).json()
        except httpx.TransportError:
            return False
        return any(s["domain"] == app and s["meta"]["status"] == "active" for s in services)

    async def edge_noticed() -> bool:  # (its lines pass through the runner, stopped till now)
        return "config stream lost, reconnecting" in (edge.logs / "stack.log").read_text()

    await edge.eventually("the edge noticing management's absence", edge_noticed, within_s=10)
    await edge.eventually("management back, the service active", active_again, within_s=30)
    assert await answered()
