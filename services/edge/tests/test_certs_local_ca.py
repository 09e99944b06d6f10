"""The local CA: a root made once and kept (0600 key, 0700 directory), leaves that verify."""

import asyncio
import ssl
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from heron_edge.certs import (
    CertificateError,
    CertificateSnapshot,
    LocalCA,
    LocalCAError,
    ServerContexts,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_root_is_created_once_with_private_modes(tmp_path: Path) -> None:
    directory = tmp_path / "edge" / "local-ca"
    ca = LocalCA(directory)
    assert not directory.exists()  # made on first use, not on construction
    fingerprint = ca.root_fingerprint()
    assert mode(directory) == 0o700
    assert mode(directory / "root.key") == 0o600
    assert mode(directory / "root.crt") == 0o644
    assert ca.root_pem() == (directory / "root.crt").read_bytes()
    assert not [p.name for p in directory.iterdir() if p.name.startswith(".")]  # no temporaries

    again = LocalCA(directory)  # a restart
    assert again.root_fingerprint() == fingerprint
    assert again.root_path.read_bytes() == ca.root_pem()


def test_a_root_without_its_key_is_refused_not_replaced(tmp_path: Path) -> None:
    LocalCA(tmp_path).root_fingerprint()
    (tmp_path / "root.key").unlink()
    with pytest.raises(LocalCAError, match=r"root\.crt exists but root\.key does not"):
        LocalCA(tmp_path).issue("a.local.test")


def test_leaves_are_cached_and_renewed_when_a_third_of_their_life_is_left(tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)  # what a certificate can hold
    clock = [now]
    ca = LocalCA(tmp_path, clock=lambda: clock[0])
    leaf = ca.issue("App.Local.Test.")
    assert leaf.names == ("app.local.test",)
    assert leaf.not_after - now == timedelta(days=7)
    assert ca.issue("app.local.test") is leaf

    clock[0] = now + timedelta(days=4)  # 3 days (< 7/3 + skew) of 7 left: not yet
    assert ca.issue("app.local.test") is leaf
    clock[0] = now + timedelta(days=5)
    renewed = ca.issue("app.local.test")
    assert renewed.fingerprint != leaf.fingerprint
    assert renewed.not_after == clock[0] + timedelta(days=7)


@pytest.mark.parametrize("domain", ["127.0.0.1", "bad domain", "a..b", "-x.test", ""])
def test_only_dns_names_get_leaves(tmp_path: Path, domain: str) -> None:
    with pytest.raises(CertificateError):
        LocalCA(tmp_path).issue(domain)


async def test_a_client_trusting_the_root_verifies_a_leaf(tmp_path: Path) -> None:
    ca = LocalCA(tmp_path / "local-ca")
    leaf = ca.issue("app.local.test")
    contexts = ServerContexts(CertificateSnapshot.build(1, local={"app.local.test": leaf}))
    server_context = contexts.context_for("app.local.test")
    assert not contexts.is_fallback(server_context)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello over TLS")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    client = ssl.create_default_context(cafile=ca.root_path)  # check_hostname on
    client.set_alpn_protocols(["http/1.1"])
    async with server:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client, server_hostname="app.local.test"
        )
        assert await reader.read() == b"hello over TLS"
        ssl_object = writer.get_extra_info("ssl_object")
        assert ssl_object.selected_alpn_protocol() == "http/1.1"
        writer.close()
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.open_connection(
                "127.0.0.1", port, ssl=client, server_hostname="other.local.test"
            )
