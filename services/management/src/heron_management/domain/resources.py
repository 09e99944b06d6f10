"""Network resources' addresses: one IP (host), a domain name (domain) or a CIDR (subnet)."""

import ipaddress

from heron_core.service import normalize_domain
from heron_core.types import ResourceType


def infer_type(address: str) -> ResourceType:
    """What ``address`` looks like, for a request that names no type (NetBird infers it too)."""
    text = address.strip()
    if "/" in text:
        return ResourceType.SUBNET
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return ResourceType.DOMAIN
    return ResourceType.HOST


def normalize_address(kind: ResourceType, address: str) -> str:
    """``address`` in its canonical form for ``kind``; ValueError says what is wrong."""
    text = address.strip()
    if kind is ResourceType.HOST:
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            raise ValueError(
                f"a host resource's address is one IP address, not {address!r}"
            ) from None
    if kind is ResourceType.SUBNET:
        try:
            if "/" not in text:  # one address is a host resource, not a subnet
                raise ValueError(text)
            return str(ipaddress.ip_network(text, strict=True))
        except ValueError:
            raise ValueError(
                f"a subnet resource's address is a CIDR with no host bits set (e.g. "
                f"10.0.0.0/24), not {address!r}"
            ) from None
    try:
        return normalize_domain(text)
    except ValueError as exc:
        raise ValueError(f"a domain resource's address is a domain name: {exc}") from None


def subnet_holds(subnet: str, host: str | None) -> bool:
    """Whether ``host`` is an IP address inside ``subnet`` (a subnet target's rule)."""
    if host is None:
        return False
    try:
        return ipaddress.ip_address(host) in ipaddress.ip_network(subnet)
    except ValueError:
        return False
