"""One ACME order, from placing it (or taking up the one the lease names) to the chain.

The steps: place the order and write it into the lease; for each pending authorization put the
answer into ``acme_challenges`` and tell the CA to validate; poll until the order is ready;
finalize with a CSR for a key recorded in the lease; poll until valid; download the chain.
The blocking ``acme`` calls run in worker threads; polling waits as the CA's ``Retry-After``
says, within bounds. Answers are removed whatever the outcome.
"""

import asyncio
from contextlib import suppress
from dataclasses import dataclass

import structlog

from heron_bus.errors import BusError
from heron_certmanager.acme_client import AcmeAccount, AcmeSession, Authorization, Order
from heron_certmanager.answers import answer_key, challenge_answer
from heron_certmanager.errors import OrderFailedError
from heron_certmanager.issued import csr_for, new_certificate_key, stored_certificate
from heron_certmanager.leases import Lease
from heron_certmanager.state import State
from heron_core.certificates import ChallengeType, StoredCertificate

log = structlog.get_logger(__name__)

#: between two polls when the CA names no Retry-After
POLL_S = 1.0
#: the longest wait between two polls, whatever Retry-After says (the order has a deadline)
MAX_POLL_S = 10.0
#: order states after which the order is of no more use (RFC 8555 §7.1.6)
DEAD_ORDER = frozenset({"invalid", "expired", "revoked", "deactivated"})


@dataclass
class Orderer:
    account: AcmeAccount
    state: State
    challenge_type: ChallengeType
    timeout_s: float
    #: the edges' time to receive an answer through NATS before the CA may look for it
    propagation_s: float = 2.0

    async def obtain(self, domain: str, lease: Lease) -> StoredCertificate:
        """A certificate for ``domain``; ``OrderFailedError`` with the CA's reason if none."""
        try:
            async with asyncio.timeout(self.timeout_s):
                session = await asyncio.to_thread(self.account.session)
                order = await self._resumed(session, lease) or await self._placed(
                    session, domain, lease
                )
                answered: dict[str, str] = {}  # challenge URL -> key of its answer
                try:
                    order = await self._authorized(session, order, domain, answered)
                    order = await self._issued(session, order, domain, lease)
                finally:
                    for key in answered.values():
                        with suppress(BusError):
                            await self.state.drop_answer(key)
                chain = await asyncio.to_thread(session.certificate_chain, order)
        except TimeoutError:
            raise OrderFailedError(
                f"the order did not complete within {self.timeout_s:g}s"
            ) from None
        assert lease.value.key_pem is not None  # recorded before finalizing
        return stored_certificate(domain, chain, lease.value.key_pem)

    async def _resumed(self, session: AcmeSession, lease: Lease) -> Order | None:
        """The order the lease names, if it can still give a certificate we hold the key of."""
        if lease.value.order_url is None:
            return None
        try:
            order = await asyncio.to_thread(session.order, lease.value.order_url)
        except OrderFailedError as exc:
            log.info("leased order unusable", domain=lease.domain, reason=exc.reason)
            return None
        issuing = order.status in ("processing", "valid")
        if order.status in DEAD_ORDER or (issuing and lease.value.key_pem is None):
            return None
        log.info("order resumed", domain=lease.domain, order=order.url, status=order.status)
        return order

    async def _placed(self, session: AcmeSession, domain: str, lease: Lease) -> Order:
        key_pem = new_certificate_key()
        order = await asyncio.to_thread(session.new_order, csr_for(domain, key_pem))
        await lease.record(order_url=order.url, key_pem=key_pem)
        log.info("order placed", domain=domain, order=order.url)
        return order

    async def _authorized(
        self, session: AcmeSession, order: Order, domain: str, answered: dict[str, str]
    ) -> Order:
        """Answer every pending authorization and wait until the order is no longer pending."""
        while order.status == "pending":
            for url in order.authorizations:
                authorization = await asyncio.to_thread(session.authorization, url)
                if authorization.status == "invalid":
                    raise OrderFailedError(authorization.problem or "the CA refused validation")
                if authorization.status == "pending":
                    await self._answer(session, authorization, domain, answered)
            await asyncio.sleep(_poll_delay(order.retry_after_s))
            order = await asyncio.to_thread(session.order, order.url)
        if order.status == "invalid":
            raise OrderFailedError(await self._why_invalid(session, order))
        return order

    async def _answer(
        self,
        session: AcmeSession,
        authorization: Authorization,
        domain: str,
        answered: dict[str, str],
    ) -> None:
        wanted = self.challenge_type.value
        challenge = next((c for c in authorization.challenges if c.type == wanted), None)
        if challenge is None:
            offered = ", ".join(sorted(c.type for c in authorization.challenges)) or "none"
            raise OrderFailedError(
                f"the CA offers no {wanted} challenge for {domain!r} (offered: {offered})",
                permanent=True,
            )
        if challenge.url in answered:
            return
        # remembered even when answered before a restart: removed at the end all the same
        answered[challenge.url] = key = answer_key(self.challenge_type, domain, challenge.token)
        if challenge.status != "pending":
            return
        await self.state.put_answer(key, challenge_answer(challenge, domain))
        await asyncio.sleep(self.propagation_s)
        await asyncio.to_thread(session.answer, challenge)
        log.info("challenge answered", domain=domain, type=wanted)

    async def _issued(self, session: AcmeSession, order: Order, domain: str, lease: Lease) -> Order:
        """Finalize a ready order and wait until it is valid."""
        if order.status == "ready":
            if lease.value.key_pem is None:
                await lease.record(key_pem=new_certificate_key())
            assert lease.value.key_pem is not None
            await lease.record()  # still ours: nobody else finalizes this order
            await asyncio.to_thread(session.finalize, order, csr_for(domain, lease.value.key_pem))
            order = await asyncio.to_thread(session.order, order.url)
        while order.status in ("ready", "processing"):
            await asyncio.sleep(_poll_delay(order.retry_after_s))
            order = await asyncio.to_thread(session.order, order.url)
        if order.status != "valid":
            raise OrderFailedError(await self._why_invalid(session, order))
        return order

    async def _why_invalid(self, session: AcmeSession, order: Order) -> str:
        """The CA's reason: a failed challenge's problem first, the order's own after."""
        for url in order.authorizations:
            authorization = await asyncio.to_thread(session.authorization, url)
            if authorization.problem:
                return authorization.problem
        return order.problem or f"the CA left the order {order.status!r}"


def _poll_delay(retry_after_s: float | None) -> float:
    return min(max(retry_after_s or POLL_S, POLL_S), MAX_POLL_S)
