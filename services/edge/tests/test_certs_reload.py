"""Certificate files are hot-reloaded: a good change is served within two polls, a broken one
is refused once while the previous pair stays, a deleted one is dropped."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from heron_edge.certs import CertificatePair, CertificateStore, self_signed_pair

POLL_S = 0.02
REFUSED = "certificate refused, keeping the previous one"


def write(directory: Path, stem: str, pair: CertificatePair, *, key: bool = True) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{stem}.crt").write_bytes(pair.chain_pem)
    if key:
        (directory / f"{stem}.key").write_bytes(pair.key_pem)


async def until(
    store: CertificateStore, condition: Callable[[], bool], timeout_s: float = 2.0
) -> float:
    """Wait for a snapshot in which ``condition`` holds; returns how long it took."""
    start = time.monotonic()
    async with contextlib.aclosing(store.changes()) as changes, asyncio.timeout(timeout_s):
        async for _ in changes:
            if condition():
                break
    return time.monotonic() - start


def events(logs: Sequence[MutableMapping[str, Any]], event: str) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == event]


@pytest.fixture
async def static_store(tmp_path: Path) -> AsyncIterator[CertificateStore]:
    store = CertificateStore(certificate_directory=tmp_path / "certs", poll_interval_s=POLL_S)
    yield store
    await store.close()


def served(store: CertificateStore, name: str | None = "any.example.com") -> str | None:
    pair = store.snapshot.lookup(name)
    return None if pair is None else pair.fingerprint


async def test_the_static_pair_follows_its_files(
    tmp_path: Path, static_store: CertificateStore
) -> None:
    certs = tmp_path / "certs"
    first, second, third = (self_signed_pair([f"{n}.example.com"]) for n in ("a", "b", "c"))
    write(certs, "tls", first)
    await static_store.start()
    assert served(static_store) == first.fingerprint  # the catch-all, for any name

    write(certs, "tls", second)
    took = await until(static_store, lambda: served(static_store) == second.fingerprint)
    assert took < 2.0

    with capture_logs() as logs:
        (certs / "tls.crt").write_bytes(b"-----BEGIN CERTIFICATE-----\ngarbage\n")
        await asyncio.sleep(POLL_S * 15)
        assert served(static_store) == second.fingerprint  # the good one stays in use
        (refused,) = events(logs, REFUSED)  # once, not once per poll
        assert refused["path"] == str(certs / "tls.crt")
        assert "cannot be parsed" in refused["reason"]
        assert refused["log_level"] == "error"

    write(certs, "tls", third)
    await until(static_store, lambda: served(static_store) == third.fingerprint)

    with capture_logs() as logs:
        (certs / "tls.crt").unlink()
        (certs / "tls.key").unlink()
        await until(static_store, lambda: served(static_store) is None)
    assert events(logs, "certificate removed")


async def test_a_half_written_update_is_refused_once_then_taken(
    tmp_path: Path, static_store: CertificateStore
) -> None:
    certs = tmp_path / "certs"
    old, new = self_signed_pair(["a.example.com"]), self_signed_pair(["a.example.com"])
    write(certs, "tls", old)
    await static_store.start()
    with capture_logs() as logs:
        write(certs, "tls", new, key=False)  # the certificate now, its key later
        await asyncio.sleep(POLL_S * 15)
        assert served(static_store) == old.fingerprint
        (refused,) = events(logs, REFUSED)
        assert "does not belong to the certificate" in refused["reason"]
        (certs / "tls.key").write_bytes(new.key_pem)
        await until(static_store, lambda: served(static_store) == new.fingerprint)
        assert len(events(logs, REFUSED)) == 1


async def test_an_expired_replacement_does_not_replace_a_valid_pair(
    tmp_path: Path, static_store: CertificateStore
) -> None:
    from datetime import UTC, datetime, timedelta

    certs = tmp_path / "certs"
    good = self_signed_pair(["a.example.com"])
    expired = self_signed_pair(
        ["a.example.com"], now=datetime.now(UTC) - timedelta(days=30), valid_for=timedelta(days=1)
    )
    write(certs, "tls", expired)
    await static_store.start()
    assert served(static_store) == expired.fingerprint  # nothing better: served, with a warning
    write(certs, "tls", good)
    await until(static_store, lambda: served(static_store) == good.fingerprint)
    with capture_logs() as logs:
        write(certs, "tls", expired)
        await asyncio.sleep(POLL_S * 15)
    assert "expired" in events(logs, REFUSED)[0]["reason"]
    assert served(static_store) == good.fingerprint


async def test_missing_static_files_leave_the_store_empty(tmp_path: Path) -> None:
    store = CertificateStore(certificate_directory=tmp_path / "nowhere", poll_interval_s=POLL_S)
    with capture_logs() as logs:
        await store.start()
        await asyncio.sleep(POLL_S * 5)
        await store.close()
    assert served(store) is None
    assert [entry["event"] for entry in logs] == ["no static certificate"]


async def test_the_wildcard_directory_follows_its_files(tmp_path: Path) -> None:
    directory = tmp_path / "wildcard"
    exact = self_signed_pair(["a.example.com"])
    star = self_signed_pair(["*.example.com", "example.com"])
    write(directory, "a.example.com", exact)
    (directory / "notes.txt").write_text("not a certificate")
    store = CertificateStore(
        certificate_directory=None, wildcard_directory=directory, poll_interval_s=POLL_S
    )
    await store.start()
    try:
        assert served(store, "a.example.com") == exact.fingerprint
        assert served(store, "b.example.com") is None

        write(directory, "star", star)
        await until(store, lambda: served(store, "b.example.com") == star.fingerprint)
        assert served(store, "example.com") == star.fingerprint
        assert served(store, "a.example.com") == exact.fingerprint  # exact beats wildcard
        assert served(store, "x.b.example.com") is None

        (directory / "a.example.com.crt").unlink()
        (directory / "a.example.com.key").unlink()
        await until(store, lambda: served(store, "a.example.com") == star.fingerprint)
        assert len(store.snapshot.pairs) == 1
    finally:
        await store.close()


async def test_the_wildcard_directory_may_appear_later(tmp_path: Path) -> None:
    directory = tmp_path / "later"
    store = CertificateStore(
        certificate_directory=None, wildcard_directory=directory, poll_interval_s=POLL_S
    )
    await store.start()
    try:
        pair = self_signed_pair(["a.example.com"])
        write(directory, "a", pair)
        await until(store, lambda: served(store, "a.example.com") == pair.fingerprint)
    finally:
        await store.close()
