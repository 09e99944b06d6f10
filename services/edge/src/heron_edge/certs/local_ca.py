"""A certificate authority of the edge's own, so HTTPS works with no setup (Caddy's ``tls internal``).

On first use it creates a root (EC P-256, ten years, "Heron Local CA <id>", path length 0) in
its directory: ``root.crt`` (0644: people copy it into their trust store) and ``root.key``
(0600), in a 0700 directory. Later starts reuse it, so a root someone trusted stays trusted.
``root.crt`` is written last: it marks a complete root, and one whose key is gone or does not
match is refused rather than silently replaced.

Leaves are issued on demand for one DNS name each, valid seven days, kept in memory and
reissued when less than a third of their lifetime remains. They are not written to disk: a
restart issues new ones in a millisecond, and only the root needs to be trusted.
"""

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from heron_edge.certs.issuing import build_leaf, dns_name, new_key, pem_of, private_pem_of
from heron_edge.certs.pairs import CLOCK_SKEW, CertificateError, CertificatePair, load_pair

log = structlog.get_logger(__name__)

ROOT_VALIDITY = timedelta(days=3650)
LEAF_VALIDITY = timedelta(days=7)
ROOT_CERT_FILE = "root.crt"
ROOT_KEY_FILE = "root.key"
_DIRECTORY_MODE = 0o700
_KEY_MODE = 0o600
_CERT_MODE = 0o644


def _utc_now() -> datetime:
    return datetime.now(UTC)


class LocalCAError(CertificateError):
    """The root cannot be created or used; no leaf can be issued until someone fixes it."""


@dataclass(frozen=True)
class _Root:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class _Issued:
    pair: CertificatePair
    renew_at: datetime


class LocalCA:
    """Issues leaves under a root kept in ``directory``, created there on first use."""

    def __init__(
        self,
        directory: Path,
        *,
        leaf_validity: timedelta = LEAF_VALIDITY,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.directory = directory
        self._leaf_validity = leaf_validity
        self._clock = clock
        self._root: _Root | None = None
        self._issued: dict[str, _Issued] = {}

    @property
    def root_path(self) -> Path:
        """The certificate people add to their trust store."""
        return self.directory / ROOT_CERT_FILE

    def root_pem(self) -> bytes:
        return pem_of(self._load_or_create_root().cert)

    def root_fingerprint(self) -> str:
        return self._load_or_create_root().cert.fingerprint(hashes.SHA256()).hex()

    def issue(self, domain: str) -> CertificatePair:
        """A leaf for ``domain``: the one issued before, unless it is due for renewal."""
        name = dns_name(domain)
        now = self._clock()
        issued = self._issued.get(name)
        if issued is None or now >= issued.renew_at:
            issued = self._issue(name, now)
            self._issued[name] = issued
        return issued.pair

    def forget(self, domain: str) -> None:
        """Drop the leaf cached for ``domain`` (it is no longer served)."""
        self._issued.pop(dns_name(domain), None)

    def _issue(self, name: str, now: datetime) -> _Issued:
        root = self._load_or_create_root()
        not_before = now - CLOCK_SKEW
        not_after = min(now + self._leaf_validity, root.cert.not_valid_after_utc)
        key = new_key()
        cert = build_leaf(
            [name],
            key=key,
            issuer=root.cert.subject,
            issuer_key=root.key,
            not_before=not_before,
            not_after=not_after,
        )
        pair = load_pair(pem_of(cert), private_pem_of(key), source="local-ca", now=now)
        log.info("local CA issued a certificate", domain=name, not_after=not_after.isoformat())
        return _Issued(pair, renew_at=not_after - (not_after - not_before) / 3)

    def _load_or_create_root(self) -> _Root:
        if self._root is None:
            try:
                self.directory.mkdir(mode=_DIRECTORY_MODE, parents=True, exist_ok=True)
                self.directory.chmod(_DIRECTORY_MODE)
                exists = self.root_path.exists()
                self._root = self._load_root() if exists else self._create_root()
            except OSError as exc:
                raise LocalCAError(str(self.directory), str(exc)) from exc
        return self._root

    def _load_root(self) -> _Root:
        source = str(self.directory)
        key_path = self.directory / ROOT_KEY_FILE
        if not key_path.exists():
            raise LocalCAError(
                source,
                f"{ROOT_CERT_FILE} exists but {ROOT_KEY_FILE} does not; restore it, or "
                "delete the directory to create a new root (and trust that one instead)",
            )
        try:
            cert = x509.load_pem_x509_certificate(self.root_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            raise LocalCAError(source, f"the local CA's root cannot be read: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
            raise LocalCAError(source, f"{ROOT_KEY_FILE} does not belong to {ROOT_CERT_FILE}")
        if cert.not_valid_after_utc <= self._clock():
            raise LocalCAError(
                source, "the local CA's root has expired; delete the directory to create a new one"
            )
        key_path.chmod(_KEY_MODE)  # tighten a copy restored with looser modes
        log.info("local CA loaded", root=str(self.root_path), subject=cert.subject.rfc4514_string())
        return _Root(cert, key)

    def _create_root(self) -> _Root:
        now = self._clock()
        key = new_key()
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Heron"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"Heron Local CA {secrets.token_hex(4)}"),
            ]
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + ROOT_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_CERT_SIGN, critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        _write_atomically(self.directory / ROOT_KEY_FILE, private_pem_of(key), _KEY_MODE)
        _write_atomically(self.root_path, pem_of(cert), _CERT_MODE)  # last: the root is complete
        log.info(
            "local CA created; trust its root to trust the edge's certificates",
            root=str(self.root_path),
            subject=name.rfc4514_string(),
        )
        return _Root(cert, key)


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    temporary.chmod(mode)  # the umask may have taken bits away from the mode given
    temporary.replace(path)


_CERT_SIGN = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)
