"""The base of every record Heron keeps in a NATS KV bucket (a wire **contract** per bucket).

A record is JSON with a ``schema_version``; fields a reader does not know are ignored, so a newer
writer may add some, and a record whose ``schema_version`` is newer than the reader's code is
refused rather than half-understood.
"""

from typing import ClassVar, Self

from pydantic import BaseModel, ConfigDict


class KvRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    #: the newest schema this code writes and reads
    current_schema_version: ClassVar[int] = 1
    schema_version: int = 1

    def encode(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Parse a KV value; raises ``ValueError`` (pydantic's ``ValidationError`` is one) for
        a malformed value or a schema newer than this code knows."""
        value = cls.model_validate_json(data)
        if value.schema_version > cls.current_schema_version:
            raise ValueError(
                f"{cls.__name__} schema {value.schema_version} is newer than this code knows "
                f"({cls.current_schema_version})"
            )
        return value
