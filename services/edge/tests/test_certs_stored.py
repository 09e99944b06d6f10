"""The certmanager's certificates: a ``StoredCertificate`` becomes a pair or is refused saying
why (never quoting the key), and ``BucketSync`` applies bucket changes to the external source,
keeping the previous certificate when a new value is refused."""

from datetime import UTC, datetime, timedelta

import pytest
import trustme
from structlog.testing import capture_logs

from heron_bus.kv import KvChange
from heron_core.certificates import StoredCertificate, certificate_key
from heron_edge.bucket_sync import BucketSync
from heron_edge.certs import CertificateError, CertificateStore, self_signed_pair
from heron_edge.certs.stored import stored_pair
from heron_edge.challenges import ChallengeBook

DOMAIN = "shop.example.com"
NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def stored(
    ca: trustme.CA, domain: str = DOMAIN, *, names: tuple[str, ...] = ()
) -> StoredCertificate:
    issued = ca.issue_cert(*(names or (domain,)))
    return StoredCertificate(
        domain=domain,
        chain_pem="".join(blob.bytes().decode() for blob in issued.cert_chain_pems),
        key_pem=issued.private_key_pem.bytes().decode(),
        not_before=NOW,
        not_after=NOW + timedelta(days=90),
        issued_at=NOW,
        issuer="trustme",
    )


def test_a_stored_certificate_becomes_a_pair_named_after_its_key(ca: trustme.CA) -> None:
    value = stored(ca)
    pair = stored_pair(certificate_key(DOMAIN), value.encode())
    assert pair.names == (DOMAIN,)
    assert pair.source == f"acme:{DOMAIN}"


def test_broken_values_are_refused_saying_why_without_quoting_the_key(ca: trustme.CA) -> None:
    good = stored(ca)
    other_key = self_signed_pair([DOMAIN]).key_pem.decode()
    refused = {
        b"{not json": "not a stored certificate",
        b'{"domain": "shop.example.com"}': r"chain_pem \(missing\)",
        good.model_copy(update={"schema_version": 99}).encode(): "newer than this code knows",
        stored(ca, "other.example.com").encode(): "is for 'other.example.com', not for its key",
        good.model_copy(update={"key_pem": other_key}).encode(): "does not belong",
        good.model_copy(update={"chain_pem": "junk"}).encode(): "no PEM certificate",
        stored(ca, names=("www.example.com",)).encode(): "does not name 'shop.example.com'",
    }
    for value, reason in refused.items():
        with pytest.raises(CertificateError, match=reason) as caught:
            stored_pair(DOMAIN, value)
        assert "PRIVATE KEY" not in str(caught.value)
        assert good.key_pem[40:80] not in str(caught.value)


def sync(store: CertificateStore) -> BucketSync:
    def unused(_: object) -> None:
        raise AssertionError("no challenge expected")

    return BucketSync(
        "nats://unused", certificates=store.external, challenges=ChallengeBook(on_change=unused)
    )


def test_bucket_changes_put_and_remove_certificates(ca: trustme.CA) -> None:
    store = CertificateStore(certificate_directory=None)
    bucket = sync(store)
    bucket.apply_certificate(KvChange(DOMAIN, stored(ca).encode()))
    served = store.snapshot.lookup(DOMAIN)
    assert served is not None and served.source == f"acme:{DOMAIN}"

    bucket.apply_certificate(KvChange(DOMAIN, None))
    assert store.snapshot.lookup(DOMAIN) is None


def test_a_refused_value_leaves_the_previous_certificate_in_place(ca: trustme.CA) -> None:
    store = CertificateStore(certificate_directory=None)
    bucket = sync(store)
    bucket.apply_certificate(KvChange(DOMAIN, stored(ca).encode()))
    before = store.snapshot

    with capture_logs() as logs:
        bucket.apply_certificate(KvChange(DOMAIN, b'{"domain": 1}'))

    assert store.snapshot is before  # nothing changed, not even the version
    assert [entry["event"] for entry in logs] == ["certificate refused, keeping the previous one"]
    assert logs[0]["key"] == DOMAIN
