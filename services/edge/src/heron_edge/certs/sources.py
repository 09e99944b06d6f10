"""Where certificates come from: files the edge polls, and pairs handed in from outside.

``StaticFileSource`` is one chain and key (``<directory>/tls.crt`` and ``tls.key``) and
``WildcardDirectorySource`` every ``<name>.crt`` with its ``<name>.key`` in a directory; each
pair of files is a ``WatchedPair`` (hot reload, refusals). ``ExternalSource`` is the seam for
certificates that arrive over the wire (ACME's ``certificates`` KV bucket): its owner calls
``put`` and ``remove``.
"""

import os
from collections.abc import Callable
from pathlib import Path

import structlog

from heron_edge.certs.pairs import CertificatePair
from heron_edge.certs.watched import WatchedPair

log = structlog.get_logger(__name__)

CERTIFICATE_SUFFIX = ".crt"
KEY_SUFFIX = ".key"


class StaticFileSource:
    """One chain and key: served for the names it covers, and as the catch-all for the rest.

    Optional: without its files the source is empty. Paths are relative to ``directory``
    unless absolute (NetBird's ``--cert-dir``, ``--cert-file``, ``--cert-key-file``).
    """

    def __init__(
        self,
        directory: Path = Path("certs"),
        certificate_file: str = "tls.crt",
        key_file: str = "tls.key",
    ) -> None:
        self._watched = WatchedPair(directory / certificate_file, directory / key_file)

    @property
    def pair(self) -> CertificatePair | None:
        return self._watched.pair

    def pairs(self) -> tuple[CertificatePair, ...]:
        return () if self._watched.pair is None else (self._watched.pair,)

    def load(self) -> bool:
        changed = self._watched.load()
        if self._watched.gone:
            log.info("no static certificate", path=str(self._watched.cert_path))
        return changed

    def poll(self) -> bool:
        return self._watched.poll()


class WildcardDirectorySource:
    """Every ``<name>.crt`` + ``<name>.key`` in a directory, each served for its own names.

    The file names are free (``example.com.crt``, ``star.example.com.crt``); what a pair serves
    is what its certificate names. Hidden files (editors' and copy tools' temporaries) are
    skipped. A missing directory is empty, and is picked up when it appears.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._watched: dict[str, WatchedPair] = {}
        self._scan_problem: str | None = None

    def pairs(self) -> tuple[CertificatePair, ...]:
        watched = (self._watched[stem] for stem in sorted(self._watched))
        return tuple(w.pair for w in watched if w.pair is not None)

    def load(self) -> bool:
        changed = False
        for watched in self._scan():
            changed |= watched.load()
        if not self._watched:
            log.info("no certificates in the wildcard directory", path=str(self.directory))
        self._forget_gone()
        return changed

    def poll(self) -> bool:
        changed = False
        for watched in self._scan():
            changed |= watched.poll()
        self._forget_gone()
        return changed

    def _scan(self) -> list[WatchedPair]:
        """Every pair to look at: those known, and new ones in the directory."""
        stems = self._stems() or set()  # None, unreadable: look at the known ones only
        for stem in stems - self._watched.keys():
            self._watched[stem] = WatchedPair(
                self.directory / f"{stem}{CERTIFICATE_SUFFIX}",
                self.directory / f"{stem}{KEY_SUFFIX}",
            )
        return list(self._watched.values())

    def _stems(self) -> set[str] | None:
        try:
            with os.scandir(self.directory) as entries:
                names = [entry.name for entry in entries if not entry.name.startswith(".")]
        except FileNotFoundError:
            names = []
        except OSError as exc:
            if str(exc) != self._scan_problem:
                log.error(
                    "wildcard directory unreadable", path=str(self.directory), reason=str(exc)
                )
            self._scan_problem = str(exc)
            return None
        self._scan_problem = None
        return {
            name.removesuffix(suffix)
            for name in names
            for suffix in (CERTIFICATE_SUFFIX, KEY_SUFFIX)
            if name.endswith(suffix) and len(name) > len(suffix)
        }

    def _forget_gone(self) -> None:
        for stem in [stem for stem, w in self._watched.items() if w.gone and w.pair is None]:
            del self._watched[stem]


class ExternalSource:
    """Pairs handed in by name from outside: the seam for ACME's ``certificates`` bucket.

    The owner validates with ``load_pair`` and calls ``put``/``remove``; ``on_change`` tells the
    store. A name is the owner's key (the bucket's key), not necessarily one of the pair's names.
    """

    def __init__(self, on_change: Callable[[], None]) -> None:
        self._pairs: dict[str, CertificatePair] = {}
        self._on_change = on_change

    def pairs(self) -> tuple[CertificatePair, ...]:
        return tuple(self._pairs[name] for name in sorted(self._pairs))

    def put(self, name: str, pair: CertificatePair) -> None:
        previous = self._pairs.get(name)
        if previous is not None and previous.fingerprint == pair.fingerprint:
            return
        self._pairs[name] = pair
        log.info(
            "certificate loaded",
            name=name,
            source=pair.source,
            names=pair.names,
            not_after=pair.not_after.isoformat(),
            fingerprint=pair.fingerprint,
        )
        self._on_change()

    def remove(self, name: str) -> None:
        if self._pairs.pop(name, None) is not None:
            log.info("certificate removed", name=name)
            self._on_change()
