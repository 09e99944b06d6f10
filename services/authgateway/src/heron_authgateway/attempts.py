"""Failed password and PIN attempts, shared by every replica through the KV bucket
``auth_attempts`` (compare-and-set: a write that lost a race reads again and retries).

Two records per service: one per client address (``<service>.addr.<address>``) and one for the
service as a whole (``<service>.all``). The rule (docs/auth.md, "Brute force"):

- while an address (or the service) is locked, a try is refused before the secret is looked at;
- ``max_failures`` failures of an address within ``window_s`` lock it for ``lockout_s``,
  doubled for each lockout it had before, up to ``lockout_cap_s``; its record is forgotten a
  day after its last write (the bucket's TTL), and at once after a success;
- ``service_max_failures`` failures of all addresses within the window lock the service for
  everyone for ``lockout_s``.

An address's try is counted *before* the secret is checked (``admit``) and the count undone by
a success: parallel tries from one address cannot slip past the limit together. The service's
count grows only with real failures, so busy legitimate logins never lock it.
"""

import asyncio
import hashlib
import ipaddress
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from pydantic import Field

from heron_authgateway.errors import AttemptsBusyError
from heron_bus.bucket import Bucket
from heron_core.kv import KvRecord

log = structlog.get_logger(__name__)

#: compare-and-set rounds before giving up (each loses only to another replica's write)
CAS_ATTEMPTS = 25
#: an IPv6 client is counted by its /64: one host usually holds a whole /64
IPV6_PREFIX = 64
_KEY_SAFE = re.compile(r"[-_=a-zA-Z0-9]{1,128}")


@dataclass(frozen=True)
class AttemptPolicy:
    max_failures: int
    window_s: float
    lockout_s: float
    lockout_cap_s: float
    service_max_failures: int


class AttemptRecord(KvRecord):
    #: when the failures within the window happened (epoch seconds)
    failures: list[float] = Field(default_factory=list)
    #: how many lockouts this address (or service) had since its record was new
    lockouts: int = 0
    locked_until: float = 0.0


@dataclass(frozen=True)
class Verdict:
    """``admit``'s answer."""

    #: not 0: refused without checking, locked until this moment (epoch seconds)
    locked_until: float = 0.0
    #: not 0: admitted and counted; a wrong secret leaves the address locked until then
    locks_until: float = 0.0

    @property
    def admitted(self) -> bool:
        return not self.locked_until


class Attempts:
    def __init__(
        self, bucket: Bucket, policy: AttemptPolicy, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._bucket = bucket
        self._policy = policy
        self._clock = clock

    async def admit(self, service_id: str, address: str) -> Verdict:
        """Refuse while the service or address is locked; else count this try as a failure
        until ``succeeded`` says otherwise."""
        now = self._clock()
        service = await self._read(service_key(service_id))
        if service.locked_until > now:
            return Verdict(locked_until=service.locked_until)
        verdict = Verdict()

        def count(record: AttemptRecord) -> AttemptRecord | None:
            nonlocal verdict
            if record.locked_until > now:
                verdict = Verdict(locked_until=record.locked_until)
                return None
            failures = [*self._recent(record.failures, now), now]
            if len(failures) < self._policy.max_failures:
                verdict = Verdict()
                return record.model_copy(update={"failures": failures})
            lockout = self._policy.lockout_s * 2 ** min(record.lockouts, 32)
            until = now + min(lockout, self._policy.lockout_cap_s)
            verdict = Verdict(locks_until=until)
            return AttemptRecord(failures=[], lockouts=record.lockouts + 1, locked_until=until)

        await self._change(address_key(service_id, address), count)
        return verdict

    async def succeeded(self, service_id: str, address: str) -> None:
        """The secret was right: forget this address's failures and lockouts."""
        await self._bucket.delete(address_key(service_id, address))

    async def failed(self, service_id: str) -> float:
        """The secret was wrong (``admit`` counted it for the address): count it for the
        service; until when the service is locked now (0: it is not)."""
        now = self._clock()

        def count(record: AttemptRecord) -> AttemptRecord | None:
            failures = [*self._recent(record.failures, now), now]
            if len(failures) < self._policy.service_max_failures:
                return record.model_copy(update={"failures": failures})
            log.warning("service locked out after many failed logins", service_id=service_id)
            return AttemptRecord(
                lockouts=record.lockouts + 1, locked_until=now + self._policy.lockout_s
            )

        return (await self._change(service_key(service_id), count)).locked_until

    def _recent(self, failures: list[float], now: float) -> list[float]:
        return [moment for moment in failures if now - moment < self._policy.window_s]

    async def _read(self, key: str) -> AttemptRecord:
        entry = await self._bucket.get(key)
        return _decode(entry.value if entry else None)

    async def _change(
        self, key: str, change: Callable[[AttemptRecord], AttemptRecord | None]
    ) -> AttemptRecord:
        """Apply ``change`` to the key's record with compare-and-set; None from it: no write."""
        for round_ in range(CAS_ATTEMPTS):
            entry = await self._bucket.get(key)
            current = _decode(entry.value if entry else None)
            updated = change(current)
            if updated is None:
                return current
            data = updated.model_dump_json().encode()
            if entry is None or entry.value is None:
                written = await self._bucket.create(key, data)
            else:
                written = await self._bucket.update(key, data, entry.revision)
            if written is not None:
                return updated
            await asyncio.sleep(0.001 * round_)  # another replica wrote first: read again
        raise AttemptsBusyError(f"attempt record {key!r} kept changing ({CAS_ATTEMPTS} rounds)")


def _decode(value: bytes | None) -> AttemptRecord:
    if not value:
        return AttemptRecord()
    try:
        return AttemptRecord.decode(value)
    except ValueError:
        return AttemptRecord()  # unreadable: start again rather than lock anyone out for ever


def service_key(service_id: str) -> str:
    return f"{_safe(service_id)}.all"


def address_key(service_id: str, address: str) -> str:
    """NATS keys allow ``[-/_=.a-zA-Z0-9]``: IPv6 colons become ``_``; a value that is not an
    IP address becomes a digest."""
    return f"{_safe(service_id)}.addr.{address_token(address)}"


def address_token(address: str) -> str:
    """Whom a limit counts: an IPv4 address, an IPv6 /64 (one host's usual share), a digest of
    anything else."""
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]").split("%", 1)[0])
    except ValueError:
        return "h-" + hashlib.sha256(address.encode()).hexdigest()[:32]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        network = ipaddress.IPv6Network((ip, IPV6_PREFIX), strict=False)
        return str(network.network_address).replace(":", "_") + f"-{IPV6_PREFIX}"
    return str(ip)


def _safe(part: str) -> str:
    if _KEY_SAFE.fullmatch(part):
        return part
    return "h-" + hashlib.sha256(part.encode()).hexdigest()[:32]
