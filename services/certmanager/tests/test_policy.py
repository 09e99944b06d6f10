"""The decisions, as situations and answers: no NATS, no CA."""

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from heron_certmanager.errors import OrderFailedError, RateLimitedError
from heron_certmanager.policy import (
    RetryPolicy,
    Validity,
    due_at,
    on_failed,
    on_issued,
    on_requested,
    on_wanted,
    renewal_at,
)
from heron_certmanager.records import TOMBSTONE_TTL, DomainRecord

NOW = datetime(2030, 1, 1, tzinfo=UTC)
DOMAIN = "app.example.com"
RETRY = RetryPolicy(initial_s=60.0, max_s=3600.0)


def wanted(**changes: object) -> DomainRecord:
    return DomainRecord(domain=DOMAIN, wanted=True, changed_at=NOW).model_copy(update=changes)


def test_renewal_is_at_two_thirds_of_the_lifetime() -> None:
    ninety_days = Validity(NOW, NOW + timedelta(days=90))

    assert renewal_at(ninety_days) == NOW + timedelta(days=60)


def test_a_wanted_domain_without_a_certificate_is_due_now() -> None:
    assert due_at(wanted(), None, covered=False, now=NOW) == NOW


def test_a_certificate_is_due_at_its_renewal_time_and_at_once_when_expired() -> None:
    valid = Validity(NOW - timedelta(days=10), NOW + timedelta(days=80))
    expired = Validity(NOW - timedelta(days=90), NOW - timedelta(seconds=1))

    assert due_at(wanted(), valid, covered=False, now=NOW) == NOW + timedelta(days=50)
    assert due_at(wanted(), expired, covered=False, now=NOW) == NOW


@pytest.mark.parametrize(
    ("record", "covered"),
    [
        (wanted(wanted=False), False),  # no HTTP service uses it
        (wanted(halted=True), False),  # the CA refused for good
        (wanted(), True),  # a wildcard or static file covers it
    ],
)
def test_nothing_is_due(record: DomainRecord, covered: bool) -> None:
    assert due_at(record, None, covered=covered, now=NOW) is None


def test_a_backoff_holds_the_next_order_back() -> None:
    later = NOW + timedelta(minutes=5)

    assert due_at(wanted(next_attempt_at=later), None, covered=False, now=NOW) == later


def test_an_event_older_than_the_records_last_change_is_stale() -> None:
    deleted = wanted(wanted=False)

    assert on_wanted(deleted, DOMAIN, wanted=True, at=NOW - timedelta(seconds=1)) is None
    assert on_wanted(deleted, DOMAIN, wanted=True, at=NOW + timedelta(seconds=1)) == DomainRecord(
        domain=DOMAIN, wanted=True, changed_at=NOW + timedelta(seconds=1)
    )


def test_the_same_answer_keeps_the_record_and_its_failures() -> None:
    failing = wanted(failures=3, next_attempt_at=NOW + timedelta(hours=1))

    assert on_wanted(failing, DOMAIN, wanted=True, at=NOW + timedelta(days=1)) is failing


def test_wanted_again_after_a_deletion_starts_afresh() -> None:
    deleted = wanted(wanted=False, failures=4, halted=True)

    again = on_wanted(deleted, DOMAIN, wanted=True, at=NOW + timedelta(days=1))

    assert again is not None and again.failures == 0 and not again.halted


def test_a_request_clears_the_wait_and_the_halt_but_not_the_count() -> None:
    halted = wanted(failures=2, halted=True, next_attempt_at=NOW + timedelta(hours=1))

    requested = on_requested(halted, DOMAIN, at=NOW)

    assert requested == halted.model_copy(update={"halted": False, "next_attempt_at": None})


def test_a_request_for_a_domain_deleted_after_it_is_stale() -> None:
    deleted = wanted(wanted=False)

    assert on_requested(deleted, DOMAIN, at=NOW - timedelta(seconds=1)) is None
    assert on_requested(None, DOMAIN, at=NOW) == wanted()


def test_a_failure_backs_off_and_records_the_reason() -> None:
    failed = on_failed(
        wanted(), OrderFailedError("connection refused"), now=NOW, retry=RETRY, rng=random.Random(1)
    )

    assert failed.failures == 1
    assert failed.last_error == "connection refused"
    assert failed.next_attempt_at is not None
    assert NOW + timedelta(seconds=30) <= failed.next_attempt_at <= NOW + timedelta(seconds=60)


def test_the_cas_retry_after_wins_over_a_shorter_backoff() -> None:
    limit = NOW + timedelta(hours=3)

    failed = on_failed(
        wanted(), RateLimitedError("too many", retry_after=limit), now=NOW, retry=RETRY,
        rng=random.Random(1),
    )  # fmt: skip

    assert failed.next_attempt_at == limit


def test_a_permanent_refusal_halts_until_asked() -> None:
    refused = OrderFailedError("policy forbids issuing for name", permanent=True)

    failed = on_failed(wanted(), refused, now=NOW, retry=RETRY, rng=random.Random(1))

    assert failed.halted and failed.next_attempt_at is None
    assert due_at(failed, None, covered=False, now=NOW + timedelta(days=1)) is None


def test_an_issued_certificate_clears_the_failures() -> None:
    failing = wanted(failures=3, last_error="x", next_attempt_at=NOW)

    assert on_issued(failing) == wanted()


@given(failures=st.integers(min_value=1, max_value=64), seed=st.integers())
def test_backoff_doubles_up_to_its_cap_and_jitters_within_the_upper_half(
    failures: int, seed: int
) -> None:
    delay = RETRY.delay_s(failures, random.Random(seed))
    ceiling = min(60.0 * 2 ** (failures - 1), 3600.0)

    assert ceiling / 2 <= delay <= ceiling


def test_a_tombstone_goes_once_no_older_event_can_come() -> None:
    tombstone = wanted(wanted=False)

    assert not tombstone.expired_tombstone(NOW + TOMBSTONE_TTL - timedelta(seconds=1))
    assert tombstone.expired_tombstone(NOW + TOMBSTONE_TTL + timedelta(seconds=1))
    assert not wanted().expired_tombstone(NOW + TOMBSTONE_TTL * 2)
