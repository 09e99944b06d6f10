"""A certificate file and its key file on disk, polled: the pair they hold, and when it changed.

Polled, not watched with inotify: a stat per file per second costs nothing, and it also sees
bind-mounted and network file systems change. A change is acted on once it has held still for
one poll (a copy of two files is seldom atomic) and is validated before it replaces anything.
A refusal is logged once per state of the files and retried when either file changes again.
Files changed in the last two seconds are read again (see ``_racy``): a stat can miss a write.
"""

import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from heron_edge.certs.pairs import CertificateError, CertificatePair, load_pair

log = structlog.get_logger(__name__)

#: a certificate chain or key is a few KiB; a file far larger than this is not one
MAX_PEM_BYTES = 1024 * 1024
#: a file this fresh is read again on the next polls: its stamp may hide a later write
RACY_WINDOW_NS = 2_000_000_000


@dataclass(frozen=True)
class _Stamp:
    """Enough of a stat to tell that a file changed, also when it was replaced by a rename."""

    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int


_Stamps = tuple[_Stamp | None, _Stamp | None]


def _stamp(path: Path) -> _Stamp | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    except OSError:  # unreadable: the read will say why, once
        return _Stamp(-1, -1, -1, -1)
    return _Stamp(st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _racy(stamps: _Stamps) -> bool:
    """Whether a file changed so recently that a write in the same clock tick would not show.

    Git's "racy clean" problem: timestamps come from a coarse clock (a few ms; a second or two
    on some network file systems), so such files are read again until their stamps are older.
    """
    now_ns = time.time_ns()
    return any(
        stamp is not None and now_ns - max(stamp.mtime_ns, stamp.ctime_ns) < RACY_WINDOW_NS
        for stamp in stamps
    )


def _read(path: Path) -> bytes:
    with path.open("rb") as file:
        data = file.read(MAX_PEM_BYTES + 1)
    if len(data) > MAX_PEM_BYTES:
        raise CertificateError(str(path), f"larger than {MAX_PEM_BYTES} bytes: not a PEM file")
    return data


class WatchedPair:
    """A certificate file and its key file, and the pair last taken from them."""

    def __init__(self, cert_path: Path, key_path: Path) -> None:
        self.cert_path = cert_path
        self.key_path = key_path
        self.pair: CertificatePair | None = None
        self._seen: _Stamps | None = None  # the state of the files last acted on
        self._racy = False  # ... and it was so fresh that a same-tick write could hide in it
        self._settling: _Stamps | None = None  # a newer state, waiting one poll to hold still
        self._refused: tuple[_Stamps, str] | None = None  # the refusal logged last

    @property
    def gone(self) -> bool:
        return self._seen == (None, None)

    def load(self) -> bool:
        """Take the files as they are now; True when the pair changed."""
        stamps = self._stamps()
        self._seen, self._settling, self._racy = stamps, None, _racy(stamps)
        return self._apply(stamps)

    def poll(self) -> bool:
        """Take the files if they changed and have since held still; True when the pair changed."""
        stamps = self._stamps()
        if stamps == self._seen and not self._racy:
            self._settling = None
            return False
        if stamps != self._settling:
            self._settling = stamps
            return False
        return self.load()

    def _stamps(self) -> _Stamps:
        return _stamp(self.cert_path), _stamp(self.key_path)

    def _apply(self, stamps: _Stamps) -> bool:
        if stamps == (None, None):
            if self.pair is None:
                return False
            log.info("certificate removed", path=str(self.cert_path), names=self.pair.names)
            self.pair = None
            return True
        try:
            pair = self._load(stamps)
        except CertificateError as exc:
            self._report_refusal(stamps, exc.reason)
            return False
        self._refused = None
        if self.pair is not None and pair.fingerprint == self.pair.fingerprint:
            return False  # touched, or rewritten with the same content
        if pair.expired():
            log.warning(
                "certificate expired, serving it for want of another",
                path=str(self.cert_path),
                not_after=pair.not_after.isoformat(),
            )
        log.info(
            "certificate loaded",
            path=str(self.cert_path),
            names=pair.names,
            not_after=pair.not_after.isoformat(),
            fingerprint=pair.fingerprint,
        )
        self.pair = pair
        return True

    def _report_refusal(self, stamps: _Stamps, reason: str) -> None:
        if self._refused == (stamps, reason):
            return  # the same files, read again because they were racy
        self._refused = (stamps, reason)
        if self.pair is None:
            log.error("certificate refused", path=str(self.cert_path), reason=reason)
        else:
            log.error(
                "certificate refused, keeping the previous one",
                path=str(self.cert_path),
                reason=reason,
            )

    def _load(self, stamps: _Stamps) -> CertificatePair:
        cert_stamp, key_stamp = stamps
        source = str(self.cert_path)
        if cert_stamp is None:
            raise CertificateError(
                source, f"the certificate is missing, its key {self.key_path} is not"
            )
        if key_stamp is None:
            raise CertificateError(source, f"the key file {self.key_path} is missing")
        try:
            chain_pem, key_pem = _read(self.cert_path), _read(self.key_path)
        except OSError as exc:
            raise CertificateError(source, f"cannot be read: {exc}") from exc
        pair = load_pair(chain_pem, key_pem, source=source, allow_expired=True)
        if pair.expired() and self.pair is not None and not self.pair.expired():
            raise CertificateError(
                source, f"the certificate expired at {pair.not_after.isoformat()}"
            )
        return pair
