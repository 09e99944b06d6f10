"""The control process's certificates: every source, one snapshot, and word when it changes.

``CertificateStore`` owns the sources (static pair, wildcard directory, the external seam for
ACME, the local CA), polls the file sources in a background task, and keeps a
``CertificateSnapshot`` for the workers. Changes only bump a version; the snapshot is rebuilt
when someone reads it, so a burst of changes (a poll that sees ten files, the ACME bucket's
initial load) costs one rebuild and one push. ``changes()`` yields the newest snapshot, never
a backlog.
"""

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Iterable
from pathlib import Path

import structlog

from heron_core.tasks import spawn
from heron_edge.certs.local_ca import LocalCA, LocalCAError
from heron_edge.certs.pairs import CertificateError, CertificatePair, normalize_name
from heron_edge.certs.snapshot import CertificateSnapshot
from heron_edge.certs.sources import ExternalSource, StaticFileSource, WildcardDirectorySource

__all__ = ["POLL_INTERVAL_S", "CertificateSnapshot", "CertificateStore"]

log = structlog.get_logger(__name__)

#: how often certificate files are looked at; a change is served within about two of these
POLL_INTERVAL_S = 1.0
#: how long a local CA leaf outlives the last routing table that named its domain
LOCAL_RETENTION_S = 24 * 3600.0


class CertificateStore:
    """All the edge's certificates; ``start`` loads them and begins polling, ``close`` stops.

    ``certificate_directory`` None turns the static pair off; ``wildcard_directory`` None the
    wildcard directory; ``local_ca_directory`` None the local CA (``ensure_local`` then does
    nothing).
    """

    def __init__(
        self,
        *,
        certificate_directory: Path | None = Path("certs"),
        certificate_file: str = "tls.crt",
        certificate_key_file: str = "tls.key",
        wildcard_directory: Path | None = None,
        local_ca_directory: Path | None = None,
        poll_interval_s: float = POLL_INTERVAL_S,
    ) -> None:
        self.static = (
            None
            if certificate_directory is None
            else StaticFileSource(certificate_directory, certificate_file, certificate_key_file)
        )
        self.wildcard = (
            None if wildcard_directory is None else WildcardDirectorySource(wildcard_directory)
        )
        #: ACME's seam: whoever watches the ``certificates`` bucket calls ``put`` and ``remove``
        self.external = ExternalSource(on_change=self._changed)
        self.local_ca = None if local_ca_directory is None else LocalCA(local_ca_directory)
        self._poll_interval_s = poll_interval_s
        self._local_wanted: frozenset[str] = frozenset()
        self._local_named: dict[str, float] = {}  # domain → when a table last named it
        self._local: dict[str, CertificatePair] = {}
        self._local_refused: set[str] = set()  # logged once, until wanted no more
        self._local_ca_problem: str | None = None  # logged once, until it is fixed
        self._version = 0
        self._snapshot = CertificateSnapshot()
        self._wakeup = asyncio.Event()
        self._polling: asyncio.Task[None] | None = None

    @property
    def snapshot(self) -> CertificateSnapshot:
        """The current snapshot; rebuilt here if anything changed since the last one."""
        if self._snapshot.version != self._version:
            self._snapshot = CertificateSnapshot.build(
                self._version,
                external=self.external.pairs(),
                files=self._file_pairs(),
                local=self._local,
                catch_all=self.static.pair if self.static is not None else None,
            )
        return self._snapshot

    async def start(self) -> None:
        """Load every file source now, then poll them in the background."""
        if self._polling is not None:
            return
        for source in (self.static, self.wildcard):
            if source is not None and source.load():
                self._changed()
        if self.local_ca is not None:
            # the root exists from the start, so a user can trust it before any service does
            try:
                root = self.local_ca.root_path
                self.local_ca.root_pem()
                log.info("local CA ready: trust its root to open services", root=str(root))
            except LocalCAError as exc:
                self._report_local_ca(exc)
        self._polling = spawn(self._poll_forever(), name="certificate poll")

    async def close(self) -> None:
        if self._polling is not None:
            self._polling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._polling
            self._polling = None

    def poll(self) -> None:
        """One look at the files and at the local leaves' renewals (the task does this)."""
        for source in (self.static, self.wildcard):
            if source is not None and source.poll():
                self._changed()
        self._refresh_local()

    def ensure_local(self, domains: Iterable[str]) -> None:
        """Serve local CA leaves for those of ``domains`` no file or external certificate covers.

        Call with every HTTP service domain whenever the routing table changes. A domain no
        longer named keeps its leaf for ``LOCAL_RETENTION_S``: a service that is disabled (or
        deleted) answers with the edge's 404 page over a certificate the client trusts, rather
        than with a certificate error.
        """
        if self.local_ca is None:
            return
        now = time.monotonic()
        for domain in domains:
            self._local_named[normalize_name(domain)] = now
        self._local_named = {
            d: at for d, at in self._local_named.items() if now - at <= LOCAL_RETENTION_S
        }
        self._local_wanted = frozenset(self._local_named)
        self._refresh_local()

    async def changes(self) -> AsyncGenerator[CertificateSnapshot, None]:
        """The current snapshot, then the newest one after each change (bursts coalesced)."""
        seen = -1
        while True:
            while self._version == seen:
                await self._wakeup.wait()
            snapshot = self.snapshot
            seen = snapshot.version
            yield snapshot

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self._poll_interval_s)
            self.poll()

    def _refresh_local(self) -> None:
        if self.local_ca is None or not (self._local_wanted or self._local):
            return
        snapshot = self.snapshot
        wanted = {d for d in self._local_wanted if not snapshot.covered(d)}
        local: dict[str, CertificatePair] = {}
        for domain in sorted(wanted):
            try:
                local[domain] = self.local_ca.issue(domain)
            except LocalCAError as exc:
                self._report_local_ca(exc)
                return  # keep serving what was issued; the next poll tries again
            except CertificateError as exc:
                if domain not in self._local_refused:
                    log.warning(
                        "no local certificate for this domain", domain=domain, reason=exc.reason
                    )
        self._report_local_ca(None)
        self._local_refused = wanted - local.keys()
        for gone in self._local.keys() - local.keys():
            self.local_ca.forget(gone)
        if _fingerprints(local) != _fingerprints(self._local):
            self._local = local
            self._changed()

    def _report_local_ca(self, problem: LocalCAError | None) -> None:
        if problem is not None and problem.reason != self._local_ca_problem:
            log.error("local CA unusable", path=problem.source, reason=problem.reason)
        self._local_ca_problem = problem.reason if problem is not None else None

    def _file_pairs(self) -> tuple[CertificatePair, ...]:
        wildcard = self.wildcard.pairs() if self.wildcard is not None else ()
        static = self.static.pairs() if self.static is not None else ()
        return (*wildcard, *static)

    def _changed(self) -> None:
        self._version += 1
        wakeup, self._wakeup = self._wakeup, asyncio.Event()
        wakeup.set()


def _fingerprints(pairs: dict[str, CertificatePair]) -> dict[str, str]:
    return {name: pair.fingerprint for name, pair in pairs.items()}
