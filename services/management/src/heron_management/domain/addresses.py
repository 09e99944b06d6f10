"""Network addresses written in settings: ``host:port``, ``[v6]:port``, or a host alone."""

import ipaddress

DNS_PORT = 53


def split_host_port(value: str, default_port: int = DNS_PORT) -> tuple[str, int]:
    """``(host, port)`` of ``value``; ValueError says what is wrong. A bare IPv6 address needs
    brackets only when a port follows (``[::1]:5353``)."""
    text = value.strip()
    try:  # a bare IPv4 or IPv6 address, the latter perhaps in brackets
        return str(ipaddress.ip_address(text.removeprefix("[").removesuffix("]"))), default_port
    except ValueError:
        pass
    host, colon, port = text.rpartition(":")
    if not colon:
        host, port = text, str(default_port)
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not host:port (e.g. 127.0.0.1:53 or [::1]:5353)")
    return host.removeprefix("[").removesuffix("]"), int(port)
