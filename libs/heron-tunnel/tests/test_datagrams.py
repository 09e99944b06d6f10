"""Datagrams framed over a stream: exact bytes, any cut of the stream, real stream ends."""

import asyncio
import itertools
import socket
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from hypothesis import given, settings
from hypothesis import strategies as st

from heron_tunnel.datagrams import (
    MAX_DATAGRAM_BYTES,
    DatagramDecoder,
    DatagramError,
    encode_datagram,
    read_datagram,
    write_datagram,
)

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def test_a_datagram_is_its_length_then_its_payload() -> None:
    assert encode_datagram(b"dns?") == b"\x00\x04dns?"
    assert encode_datagram(b"") == b"\x00\x00"
    assert encode_datagram(memoryview(b"x" * 300)) == b"\x01\x2c" + b"x" * 300


def test_the_largest_datagram_fits_and_one_byte_more_does_not() -> None:
    largest = bytes(MAX_DATAGRAM_BYTES)

    assert DatagramDecoder().feed(encode_datagram(largest)) == [largest]
    with pytest.raises(ValueError, match=r"^datagram of 65536 bytes exceeds 65535$"):
        encode_datagram(bytes(MAX_DATAGRAM_BYTES + 1))


def test_the_decoder_holds_an_incomplete_datagram_until_the_rest_arrives() -> None:
    decoder = DatagramDecoder()

    assert decoder.feed(b"\x00\x03a") == []
    assert decoder.pending == 3
    assert decoder.feed(b"bc\x00\x00\x00") == [b"abc", b""]
    assert decoder.pending == 1
    assert decoder.feed(b"\x01z") == [b"z"]
    assert decoder.pending == 0


@settings(max_examples=300)
@given(
    datagrams=st.lists(
        st.one_of(st.binary(max_size=64), st.binary(min_size=1000, max_size=3000)), max_size=20
    ),
    cuts=st.lists(st.integers(min_value=0), max_size=30),
)
def test_any_datagrams_cut_anywhere_decode_to_the_same_datagrams(
    datagrams: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(encode_datagram(d) for d in datagrams)
    bounds = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    decoder = DatagramDecoder()

    decoded = [
        datagram
        for start, end in itertools.pairwise(bounds)
        for datagram in decoder.feed(stream[start:end])
    ]

    assert decoded == datagrams
    assert decoder.pending == 0


@pytest_asyncio.fixture
async def streams() -> AsyncIterator[tuple[Streams, Streams]]:
    """Two ends of a real socket pair, as asyncio streams."""
    left_sock, right_sock = socket.socketpair()
    left = await asyncio.open_connection(sock=left_sock)
    right = await asyncio.open_connection(sock=right_sock)
    yield left, right
    for _, writer in (left, right):
        writer.close()
        await writer.wait_closed()


async def test_datagrams_written_to_a_stream_are_read_back_one_by_one(
    streams: tuple[Streams, Streams],
) -> None:
    (_, writer), (reader, _) = streams
    sent = [b"first", b"", (bytes(range(256)) * 256)[:MAX_DATAGRAM_BYTES], b"last"]

    for payload in sent:
        await write_datagram(writer, payload)
    writer.write_eof()

    assert [await read_datagram(reader) for _ in sent] == sent
    assert await read_datagram(reader) is None  # the stream ended between datagrams


@pytest.mark.parametrize(
    ("tail", "message"),
    [
        (b"\x00", r"^datagram stream ended inside a length prefix$"),
        (b"\x00\x05abc", r"^datagram stream ended after 3 of a datagram's 5 bytes$"),
    ],
)
async def test_a_stream_that_ends_inside_a_datagram_is_an_error(
    streams: tuple[Streams, Streams], tail: bytes, message: str
) -> None:
    (_, writer), (reader, _) = streams
    writer.write(encode_datagram(b"whole") + tail)
    writer.write_eof()

    assert await read_datagram(reader) == b"whole"
    with pytest.raises(DatagramError, match=message):
        await read_datagram(reader)
