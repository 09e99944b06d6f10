"""A service's certificate as the certificate manager reported it, and the failure it shows.

The certificate manager publishes ``CertificateIssued`` and ``CertificateFailed`` (with the CA's
reason); management keeps the latest of each per service. A failure shows (the service is
``certificate_failed``) while it is newer than the last issue and than the last retry asked
through the API: a retry hides it until the certificate manager reports again.
"""

from dataclasses import dataclass
from datetime import datetime

#: a CA's reason can be long (a whole problem document); a status reason is a sentence or two
MAX_SHOWN_REASON_CHARS = 700


@dataclass(frozen=True)
class CertificateFailure:
    reason: str
    #: when the certificate manager tries again by itself; None: only when asked
    retry_at: datetime | None


@dataclass(frozen=True)
class CertificateRecord:
    issued_at: datetime | None = None
    failed_at: datetime | None = None
    failure_reason: str | None = None
    retry_at: datetime | None = None
    requested_at: datetime | None = None

    def failure(self) -> CertificateFailure | None:
        """The failure to show, if the last word about the certificate is one."""
        if self.failed_at is None or self.failure_reason is None:
            return None
        later = (t for t in (self.issued_at, self.requested_at) if t is not None)
        if any(t >= self.failed_at for t in later):
            return None
        return CertificateFailure(self.failure_reason, self.retry_at)


def is_newer(incoming: datetime, stored: datetime | None) -> bool:
    """An event at ``incoming`` replaces what one at ``stored`` said (a redelivered or late
    event does not)."""
    return stored is None or incoming > stored


def failure_reason(domain: str, failure: CertificateFailure) -> str:
    """The status reason of a ``certificate_failed`` service."""
    reason = failure.reason.strip()
    if len(reason) > MAX_SHOWN_REASON_CHARS:
        reason = reason[: MAX_SHOWN_REASON_CHARS - 1] + "…"
    if failure.retry_at is not None:
        when = f"the next attempt is at {failure.retry_at:%Y-%m-%d %H:%M:%S} UTC"
    else:
        when = "no new attempt until one is asked for (POST /api/services/{id}/certificate/retry)"
    return f"no certificate for {domain!r}: {reason} ({when})"
