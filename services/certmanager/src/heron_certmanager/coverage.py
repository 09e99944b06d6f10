"""Which domains the edges' own certificate files already cover, so no ACME is needed.

The same files the edges serve (``HERON_PROXY_WILDCARD_CERT_DIR``'s ``*.crt``, the static
``HERON_PROXY_CERTIFICATE_DIRECTORY``/``_FILE``) are read here for their names and validity
only; the keys stay with the edges. A file is parsed again when its size or mtime changes. A
wildcard name stands for exactly one left-most label (RFC 6125 §6.4.3), as on the edge.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import structlog
from cryptography import x509

log = structlog.get_logger(__name__)

CERTIFICATE_SUFFIX = ".crt"


@dataclass(frozen=True)
class FileCertificate:
    names: frozenset[str]
    not_before: datetime
    not_after: datetime

    def covers(self, domain: str, now: datetime) -> bool:
        if not self.not_before <= now < self.not_after:
            return False
        label, _, parent = domain.partition(".")
        return domain in self.names or (bool(label and parent) and f"*.{parent}" in self.names)


class CoveringFiles:
    """The certificate files of ``paths`` (files) and ``directories`` (their ``*.crt``)."""

    def __init__(self, *, paths: Iterable[Path] = (), directories: Iterable[Path] = ()) -> None:
        self._paths = tuple(paths)
        self._directories = tuple(directories)
        self._parsed: dict[Path, tuple[tuple[int, int], FileCertificate | None]] = {}

    def covers(self, domain: str, now: datetime) -> bool:
        """Whether a file certificate valid at ``now`` names ``domain`` (or its wildcard)."""
        return any(cert.covers(domain.lower().rstrip("."), now) for cert in self.certificates())

    def certificates(self) -> list[FileCertificate]:
        found: dict[Path, tuple[tuple[int, int], FileCertificate | None]] = {}
        for path in self._candidates():
            try:
                stat = path.stat()
            except OSError:
                continue
            stamp = (stat.st_size, stat.st_mtime_ns)
            held = self._parsed.get(path)
            found[path] = held if held and held[0] == stamp else (stamp, _parse(path))
        self._parsed = found
        return [cert for _, cert in found.values() if cert is not None]

    def _candidates(self) -> list[Path]:
        paths = list(self._paths)
        for directory in self._directories:
            try:
                paths.extend(sorted(directory.glob(f"*{CERTIFICATE_SUFFIX}")))
            except OSError:
                continue
        return paths


def _parse(path: Path) -> FileCertificate | None:
    try:
        leaf = x509.load_pem_x509_certificates(path.read_bytes())[0]
    except (OSError, ValueError) as exc:
        log.warning("certificate file skipped", path=str(path), reason=str(exc))
        return None
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = frozenset(
            n.lower().rstrip(".") for n in san.value.get_values_for_type(x509.DNSName)
        )
    except x509.ExtensionNotFound:
        names = frozenset()
    return FileCertificate(names, leaf.not_valid_before_utc, leaf.not_valid_after_utc)
