"""CNAME chains from DNS, through dnspython's async resolver: the one module that sees dnspython.

The server asked is ``HERON_MANAGEMENT_DNS_RESOLVER`` (``host:port``; tests point it at a local
DNS server) or, unset, the system's resolvers (``/etc/resolv.conf``). dnspython's answers become
a ``CnameChain`` (a name with no CNAME, or none at all, is an answer too); its errors become a
``DnsLookupError`` whose message a person reads.
"""

import asyncio
import ipaddress
import socket

import dns.asyncresolver
import dns.exception
import dns.resolver

from heron_management.domain.addresses import split_host_port
from heron_management.domain.custom_domains import CnameChain
from heron_management.errors import DnsLookupError

#: a longer chain is a loop or a mistake; DNS resolvers themselves give up around here
MAX_CNAME_HOPS = 8


class CnameLookup:
    def __init__(self, nameserver: str | None, timeout_s: float) -> None:
        self._nameserver = nameserver
        self._timeout_s = timeout_s
        self._resolver: dns.asyncresolver.Resolver | None = None

    @property
    def server(self) -> str:
        """The server asked, for messages."""
        return self._nameserver or "the system resolver"

    async def chain(self, name: str, *, stop_at: str | None = None) -> CnameChain:
        """The CNAME chain from ``name``, followed until it ends, loops, or reaches ``stop_at``."""
        resolver = await self._ready()
        targets: list[str] = []
        current = name
        for _ in range(MAX_CNAME_HOPS):
            try:
                answer = await resolver.resolve(current, "CNAME")
            except dns.resolver.NXDOMAIN:
                return CnameChain(name, tuple(targets), exists=bool(targets))
            except dns.resolver.NoAnswer:
                break
            except dns.exception.Timeout as exc:
                raise DnsLookupError(
                    f"{self.server} did not answer within {self._timeout_s:g} s"
                ) from exc
            except dns.exception.DNSException as exc:
                raise DnsLookupError(
                    f"{self.server} gave no answer about {current}: {exc}"
                ) from exc
            current = answer[0].target.to_text(omit_final_dot=True).lower()
            looped = current in targets
            targets.append(current)
            if looped or current == stop_at:
                break
        return CnameChain(name, tuple(targets))

    async def _ready(self) -> dns.asyncresolver.Resolver:
        if self._resolver is None:
            self._resolver = await self._build()
        return self._resolver

    async def _build(self) -> dns.asyncresolver.Resolver:
        if self._nameserver is None:
            try:
                resolver = dns.asyncresolver.Resolver()
            except dns.resolver.NoResolverConfiguration as exc:
                raise DnsLookupError(f"the system has no DNS resolver configured: {exc}") from exc
        else:
            host, port = split_host_port(self._nameserver)
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [await _address_of(host)]
            resolver.port = port
        resolver.lifetime = self._timeout_s
        return resolver


async def _address_of(host: str) -> str:
    """``host`` as an IP address (dnspython asks servers by address only)."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        found = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except OSError as exc:
        raise DnsLookupError(f"the DNS server's name {host!r} does not resolve: {exc}") from exc
    return str(found[0][4][0])
