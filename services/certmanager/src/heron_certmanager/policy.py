"""The certmanager's decisions, without I/O: when a domain needs an order, what an event or an
order's outcome makes of its record, how long to wait after a failure.

Everything here takes ``now`` and returns values, so tests state a situation and read the
answer; ``reconciler`` and ``intake`` apply the answers to NATS.
"""

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from heron_certmanager.errors import OrderFailedError
from heron_certmanager.records import DomainRecord

#: renew once this much of a certificate's lifetime has passed (a third is left for retries)
RENEW_AT_FRACTION = 2 / 3


class Validity(NamedTuple):
    not_before: datetime
    not_after: datetime


def renewal_at(validity: Validity) -> datetime:
    lifetime = validity.not_after - validity.not_before
    return validity.not_before + lifetime * RENEW_AT_FRACTION


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: ``initial_s`` doubling per failure up to ``max_s``,
    each wait drawn from its upper half so that domains (and replicas) that failed together do
    not come back together."""

    initial_s: float
    max_s: float

    def delay_s(self, failures: int, rng: random.Random) -> float:
        ceiling = min(self.initial_s * 2.0 ** max(failures - 1, 0), self.max_s)
        return ceiling * rng.uniform(0.5, 1.0)


def due_at(
    record: DomainRecord, validity: Validity | None, *, covered: bool, now: datetime
) -> datetime | None:
    """When ``record``'s domain next needs an order; None: not while things stay as they are."""
    if not record.wanted or record.halted or covered:
        return None
    wanted_at = now if validity is None or validity.not_after <= now else renewal_at(validity)
    if record.next_attempt_at is not None:
        return max(wanted_at, record.next_attempt_at)
    return wanted_at


def on_wanted(record: DomainRecord | None, domain: str, *, wanted: bool, at: datetime) -> (
    DomainRecord | None
):  # fmt: skip
    """The record after an event that says whether an HTTP service uses ``domain`` as of
    ``at``; None for a stale event (older than the record's last change)."""
    if record is not None and at < record.changed_at:
        return None
    if record is not None and record.wanted == wanted:
        return record
    # wanted anew: the tries of an earlier life of the domain do not count
    return DomainRecord(domain=domain, wanted=wanted, changed_at=at)


def on_requested(record: DomainRecord | None, domain: str, *, at: datetime) -> DomainRecord | None:
    """The record after someone asked for a certificate now: no wait, no halt; None when the
    request is older than the domain's last change and it is not wanted any more."""
    if record is None:
        return DomainRecord(domain=domain, wanted=True, changed_at=at)
    if not record.wanted:
        return None if at < record.changed_at else on_wanted(record, domain, wanted=True, at=at)
    return record.model_copy(update={"next_attempt_at": None, "halted": False})


def on_issued(record: DomainRecord) -> DomainRecord:
    return record.model_copy(
        update={"failures": 0, "next_attempt_at": None, "halted": False, "last_error": None}
    )


def on_failed(
    record: DomainRecord,
    error: OrderFailedError,
    *,
    now: datetime,
    retry: RetryPolicy,
    rng: random.Random,
) -> DomainRecord:
    """The record after a failed order: the next try after the backoff, or the CA's
    Retry-After if that is later; none at all after a permanent refusal."""
    failures = record.failures + 1
    next_at = now + timedelta(seconds=retry.delay_s(failures, rng))
    if error.retry_after is not None:
        next_at = max(next_at, error.retry_after)
    return record.model_copy(
        update={
            "failures": failures,
            "next_attempt_at": None if error.permanent else next_at,
            "halted": error.permanent,
            "last_error": error.reason,
        }
    )
