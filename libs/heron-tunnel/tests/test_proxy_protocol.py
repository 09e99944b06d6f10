"""PROXY protocol v2: what ``encode`` writes, ``parse`` reads back — and matches the spec's bytes."""

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from heron_tunnel.proxy_protocol import (
    SIGNATURE,
    Command,
    NeedMore,
    ProxyHeader,
    ProxyProtocolError,
    Transport,
    encode,
    encode_local,
    parse,
)

ports = st.integers(0, 65535)
v4 = st.ip_addresses(v=4).map(str)
v6 = st.ip_addresses(v=6).map(str)
tlvs = st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=40)), max_size=4).map(tuple)


def canonical(address: str) -> str:
    """How an address reads back: IPv4 in a mixed pair comes back IPv4-mapped."""
    return str(ipaddress.ip_address(address))


@given(
    family=st.sampled_from(["4", "6", "mixed"]),
    data=st.data(),
    src_port=ports,
    dst_port=ports,
    transport=st.sampled_from(list(Transport)),
    extra=tlvs,
)
def test_every_header_reads_back_as_written(
    family: str,
    data: st.DataObject,
    src_port: int,
    dst_port: int,
    transport: Transport,
    extra: tuple[tuple[int, bytes], ...],
) -> None:
    src = data.draw(v4 if family in ("4", "mixed") else v6)
    dst = data.draw(v6 if family in ("6", "mixed") else v4)
    wire = encode((src, src_port), (dst, dst_port), transport=transport, tlvs=extra)
    header = parse(wire + b"client bytes")
    assert isinstance(header, ProxyHeader)
    assert header.size == len(wire)
    assert (header.command, header.transport, header.tlvs) == (Command.PROXY, transport, extra)
    assert header.source is not None and header.destination is not None
    if family == "mixed":
        assert header.source == (canonical(f"::ffff:{src}"), src_port)
        assert header.destination == (canonical(dst), dst_port)
    else:
        assert header.source == (canonical(src), src_port)
        assert header.destination == (canonical(dst), dst_port)
    for cut in range(len(wire)):  # every prefix asks for more, never misreads
        partial = parse(wire[:cut])
        assert isinstance(partial, NeedMore)
        assert cut < partial.at_least <= len(wire)


def test_the_bytes_are_the_specs() -> None:
    wire = encode(("192.0.2.10", 51234), ("198.51.100.1", 443))
    assert wire == (
        SIGNATURE
        + bytes([0x21, 0x11, 0x00, 0x0C])  # v2 PROXY, TCP over IPv4, 12 bytes
        + bytes([192, 0, 2, 10, 198, 51, 100, 1])
        + (51234).to_bytes(2, "big")
        + (443).to_bytes(2, "big")
    )
    assert encode_local() == SIGNATURE + bytes([0x20, 0x00, 0x00, 0x00])
    local = parse(encode_local())
    assert isinstance(local, ProxyHeader)
    assert (local.command, local.source) == (Command.LOCAL, None)


@given(garbage=st.binary(min_size=1, max_size=64))
def test_anything_else_is_refused_or_asked_more_of(garbage: bytes) -> None:
    try:
        result = parse(garbage)
    except ProxyProtocolError:
        return
    assert isinstance(result, NeedMore | ProxyHeader)


@pytest.mark.parametrize(
    "wire",
    [
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n",  # version 1 is not this parser's
        SIGNATURE + bytes([0x31, 0x11, 0x00, 0x0C]) + bytes(12),  # version 3
        SIGNATURE + bytes([0x2F, 0x11, 0x00, 0x0C]) + bytes(12),  # command 15
        SIGNATURE + bytes([0x21, 0x11, 0x00, 0x04]) + bytes(4),  # too short for IPv4
        SIGNATURE + bytes([0x21, 0x11, 0x00, 0x0E]) + bytes(14),  # a cut TLV
        SIGNATURE + bytes([0x21, 0x11, 0xFF, 0xFF]),  # longer than allowed
    ],
)
def test_broken_headers_are_refused(wire: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse(wire)
