"""``KvRecord``: what every KV bucket's records share (round trip, tolerance, refusals)."""

import json
from typing import ClassVar

import pytest

from heron_core.auth import ServiceAuthRecord, SigningKeyRecord
from heron_core.certificates import ChallengeAnswer, StoredCertificate
from heron_core.kv import KvRecord


class Example(KvRecord):
    name: str


class ExampleV2(KvRecord):
    current_schema_version: ClassVar[int] = 2
    schema_version: int = 2
    name: str
    added: int = 0


def test_a_record_round_trips() -> None:
    record = Example(name="a")
    assert Example.decode(record.encode()) == record


def test_fields_a_newer_writer_added_are_ignored() -> None:
    data = json.dumps({"schema_version": 1, "name": "a", "added": 5}).encode()
    assert Example.decode(data) == Example(name="a")


def test_a_schema_newer_than_the_code_is_refused_with_its_versions() -> None:
    with pytest.raises(ValueError, match=r"Example schema 2 is newer than this code knows \(1\)"):
        Example.decode(ExampleV2(name="a").encode())


@pytest.mark.parametrize("data", [b"", b"{", b"[]", b'{"schema_version": 1}', b'{"name": 3}'])
def test_a_malformed_value_is_a_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):  # pydantic's ValidationError is one
        Example.decode(data)


@pytest.mark.parametrize(
    "record_type", [SigningKeyRecord, ServiceAuthRecord, StoredCertificate, ChallengeAnswer]
)
def test_every_bucket_record_is_a_kv_record(record_type: type[KvRecord]) -> None:
    assert issubclass(record_type, KvRecord)
    assert record_type.current_schema_version == 1
