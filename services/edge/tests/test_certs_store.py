"""Which certificate a name gets: the precedence rule, the store that feeds it, its changes."""

import asyncio
import contextlib
import pickle
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from heron_core.tasks import spawn
from heron_edge.certs import (
    CertificatePair,
    CertificateSnapshot,
    CertificateStore,
    covers,
    self_signed_pair,
)

NOW = datetime.now(UTC)


def fake(*names: str, days: int = 30, source: str = "test") -> CertificatePair:
    """A pair for the lookup logic only: its PEM is never loaded."""
    return CertificatePair(
        chain_pem=b"",
        key_pem=b"",
        names=names,
        not_after=NOW + timedelta(days=days),
        fingerprint=f"{source}:{','.join(names)}:{days}",
        source=source,
    )


def test_precedence_from_external_down_to_the_catch_all() -> None:
    acme_exact = fake("a.example.com", source="acme")
    acme_wildcard = fake("*.example.com", source="acme")
    file_exact = fake("a.example.com", "b.example.com", source="file")
    static = fake("static.example.com", "*.static.example.com", source="static")
    local = {name: fake(name, source="local") for name in ("c.example.com", "d.other.org")}
    snapshot = CertificateSnapshot.build(
        1,
        external=[acme_exact, acme_wildcard],
        files=[file_exact, static],
        local=local,
        catch_all=static,
    )
    assert snapshot.lookup("a.example.com") is acme_exact  # external exact > file exact
    assert snapshot.lookup("B.Example.com.") is file_exact  # file exact > wildcard
    assert snapshot.lookup("c.example.com") is acme_wildcard  # wildcard > local CA
    assert snapshot.lookup("d.other.org") is local["d.other.org"]  # local CA > catch-all
    assert snapshot.lookup("static.example.com") is static  # the static pair's own names
    assert snapshot.lookup("x.static.example.com") is static
    assert snapshot.lookup("unknown.org") is static  # the catch-all
    assert snapshot.lookup(None) is static  # no SNI
    assert snapshot.lookup("x.y.example.com") is static  # a wildcard is one label deep
    assert len(snapshot.pairs) == 6  # each once, also where shadowed
    assert snapshot.covered("c.example.com") and not snapshot.covered("d.other.org")


def test_without_a_catch_all_an_unknown_name_gets_nothing() -> None:
    snapshot = CertificateSnapshot.build(1, files=[fake("a.example.com")])
    assert snapshot.lookup("b.example.com") is None
    assert snapshot.lookup(None) is None
    assert CertificateSnapshot().lookup("a.example.com") is None


def test_within_a_level_the_certificate_that_expires_last_wins() -> None:
    old, renewed = fake("a.example.com", days=5), fake("a.example.com", days=80)
    assert CertificateSnapshot.build(1, files=[renewed, old]).lookup("a.example.com") is renewed
    assert CertificateSnapshot.build(1, files=[old, renewed]).lookup("a.example.com") is renewed


def test_a_snapshot_survives_the_pipe_to_the_workers() -> None:
    pair = self_signed_pair(["a.example.com"])
    snapshot = CertificateSnapshot.build(7, files=[pair], catch_all=pair)
    copy = pickle.loads(pickle.dumps(snapshot))
    assert copy == snapshot
    assert copy.lookup("a.example.com") == pair


NAMES = st.sampled_from(["a.example.com", "b.example.com", "example.com", "x.a.example.com"])
CERT_NAMES = st.sampled_from(["a.example.com", "*.example.com", "*.a.example.com", "example.com"])


@given(
    external=st.lists(st.lists(CERT_NAMES, min_size=1, max_size=2), max_size=2),
    files=st.lists(st.lists(CERT_NAMES, min_size=1, max_size=2), max_size=2),
    name=NAMES,
)
def test_a_certificate_found_by_name_covers_that_name(
    external: list[list[str]], files: list[list[str]], name: str
) -> None:
    snapshot = CertificateSnapshot.build(
        1,
        external=[fake(*names, source=f"e{i}") for i, names in enumerate(external)],
        files=[fake(*names, source=f"f{i}") for i, names in enumerate(files)],
    )
    pair = snapshot.lookup(name)
    everything = [*external, *files]
    assert (pair is not None) == any(covers(names, name) for names in everything)
    if pair is not None:
        assert covers(pair.names, name)


def write(directory: Path, stem: str, pair: CertificatePair) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{stem}.crt").write_bytes(pair.chain_pem)
    (directory / f"{stem}.key").write_bytes(pair.key_pem)


async def test_the_store_combines_its_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    static = self_signed_pair(["static.example.com"])
    wildcard = self_signed_pair(["*.example.com"])
    exact_file = self_signed_pair(["exact.example.com"])
    write(tmp_path / "certs", "tls", static)
    write(tmp_path / "wildcard", "star.example.com", wildcard)
    write(tmp_path / "wildcard", "exact.example.com", exact_file)
    store = CertificateStore(
        certificate_directory=tmp_path / "certs",
        wildcard_directory=tmp_path / "wildcard",
        local_ca_directory=tmp_path / "local-ca",
        poll_interval_s=0.02,
    )
    await store.start()
    try:
        acme = self_signed_pair(["exact.example.com"], source="acme:exact.example.com")
        store.external.put("exact.example.com", acme)
        store.ensure_local(
            ["exact.example.com", "Local.Test", "x.example.com", "static.example.com"]
        )
        snapshot = store.snapshot

        def served(name: str) -> str | None:
            pair = snapshot.lookup(name)
            return None if pair is None else pair.fingerprint

        assert served("exact.example.com") == acme.fingerprint
        assert served("x.example.com") == wildcard.fingerprint
        assert served("static.example.com") == static.fingerprint
        assert served("nothing.org") == static.fingerprint
        assert set(snapshot.local) == {"local.test"}  # the others have a certificate already
        assert served("local.test") == snapshot.local["local.test"].fingerprint

        store.external.remove("exact.example.com")
        snapshot = store.snapshot
        assert served("exact.example.com") == exact_file.fingerprint
        store.ensure_local([])  # no longer named: kept for a while (a disabled service's 404)
        assert set(store.snapshot.local) == {"local.test"}
        monkeypatch.setattr("heron_edge.certs.store.LOCAL_RETENTION_S", 0.0)
        store.ensure_local([])
        assert store.snapshot.local == {}
    finally:
        await store.close()


async def test_changes_yield_the_newest_snapshot_once_per_burst(tmp_path: Path) -> None:
    store = CertificateStore(certificate_directory=None)
    pairs = [self_signed_pair([f"s{i}.example.com"]) for i in range(3)]
    async with contextlib.aclosing(store.changes()) as changes:
        first = await anext(changes)
        assert first.pairs == ()
        for i, pair in enumerate(pairs):
            store.external.put(f"s{i}", pair)  # three changes before the consumer runs
        async with asyncio.timeout(1):
            latest = await anext(changes)
        assert len(latest.pairs) == 3 and latest.version > first.version

        async def next_one() -> CertificateSnapshot:
            return await anext(changes)

        waiting = spawn(next_one(), name="next snapshot")
        await asyncio.sleep(0.01)
        assert not waiting.done()  # nothing new: nothing yielded
        store.external.remove("s0")
        async with asyncio.timeout(1):
            assert len((await waiting).pairs) == 2
