"""The forwarder header: exact bytes, every way a header can be wrong, and fuzzed input."""

import asyncio
import re
import socket
import struct

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from heron_tunnel import header
from heron_tunnel.header import (
    MAX_BODY_BYTES,
    ForwardRequest,
    ForwardResponse,
    ForwardStatus,
    HeaderError,
    HeaderTimeoutError,
    Protocol,
    RequestTemplate,
    encode_request,
    encode_response,
    parse_request,
    parse_response,
    read_request,
    read_request_from_socket,
    read_response,
    read_response_from_socket,
)

REQUEST = ForwardRequest(Protocol.TCP, "db.internal", 5432, "203.0.113.7", 51000, "svc_1-a")
REQUEST_BYTES = (
    b"HRN\x01\x00\x1f"  # magic, version 1, body of 31 bytes
    b"\x01"  # tcp
    b"\x03\x0bdb.internal" + struct.pack("!H", 5432)  # domain target
    + b"\x01\xcb\x00\x71\x07" + struct.pack("!H", 51000)  # IPv4 client
    + b"\x07svc_1-a"
)  # fmt: skip
PAYLOAD = b"GET / HTTP/1.1\r\n\r\n"


def body(
    *,
    protocol: int = 1,
    target: bytes = b"\x01\x7f\x00\x00\x01",
    target_port: int = 80,
    client: bytes = b"\x02" + bytes(15) + b"\x01",
    client_port: int = 0,
    service_id: bytes = b"",
) -> bytes:
    return (
        bytes((protocol,)) + target + struct.pack("!H", target_port)
        + client + struct.pack("!H", client_port) + bytes((len(service_id),)) + service_id
    )  # fmt: skip


def frame(request_body: bytes) -> bytes:
    return b"HRN\x01" + struct.pack("!H", len(request_body)) + request_body


def reader_with(data: bytes, *, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


# --- encoding and round trips ---


def test_a_request_encodes_to_the_documented_bytes() -> None:
    assert encode_request(REQUEST) == REQUEST_BYTES
    assert parse_request(REQUEST_BYTES) == (REQUEST, len(REQUEST_BYTES))


def test_ipv6_targets_and_clients_round_trip_in_canonical_form() -> None:
    request = ForwardRequest(Protocol.UDP, "2001:DB8:0:0::1", 53, "::FFFF:10.0.0.1", 65535)

    assert request.target_host == "2001:db8::1"
    assert request.client_ip == "::ffff:a00:1"
    encoded = encode_request(request)
    assert encoded[6:8] == b"\x02\x02"  # udp, IPv6 target
    assert parse_request(encoded) == (request, len(encoded))


def test_domains_are_lower_cased_when_built_and_when_parsed() -> None:
    assert ForwardRequest(Protocol.TCP, "DB.Example.COM", 1, "10.0.0.1", 1).target_host == (
        "db.example.com"
    )
    shouting = frame(body(target=b"\x03\x0bDB.INTERNAL"))

    parsed = parse_request(shouting)

    assert parsed is not None
    assert parsed[0].target_host == "db.internal"


def test_a_response_encodes_to_the_documented_bytes() -> None:
    response = ForwardResponse(ForwardStatus.CONNECTION_REFUSED, "refused: 10.0.0.5:22")

    encoded = encode_response(response)

    assert encoded == b"HRN\x01\x04\x14refused: 10.0.0.5:22"
    assert parse_response(encoded) == (response, len(encoded))
    assert not response.ok
    assert ForwardResponse(ForwardStatus.OK).ok


def test_a_long_message_is_cut_on_a_character_boundary() -> None:
    message = "é" * 200  # 400 bytes of two-byte characters

    encoded = encode_response(ForwardResponse(ForwardStatus.INTERNAL, message))

    assert encoded[5] == 254  # 127 characters: the 128th would need bytes 255 and 256
    parsed = parse_response(encoded)
    assert parsed is not None
    assert parsed[0].message == "é" * 127


def test_a_header_error_carries_the_response_for_the_other_side() -> None:
    with pytest.raises(HeaderError) as caught:
        parse_request(b"HRN\x07")

    assert caught.value.response == ForwardResponse(
        ForwardStatus.UNSUPPORTED_VERSION,
        "forward request version 7 is not supported (this side speaks 1)",
    )


# --- incomplete, then truncated ---


def test_every_proper_prefix_of_a_request_is_incomplete() -> None:
    for length in range(len(REQUEST_BYTES)):
        assert parse_request(REQUEST_BYTES[:length]) is None
        assert parse_request(memoryview(REQUEST_BYTES)[:length]) is None


def test_every_proper_prefix_of_a_response_is_incomplete() -> None:
    encoded = encode_response(ForwardResponse(ForwardStatus.OK, "ok"))

    for length in range(len(encoded)):
        assert parse_response(encoded[:length]) is None


async def test_a_stream_ending_inside_a_request_is_a_truncated_header() -> None:
    for length in range(len(REQUEST_BYTES)):
        with pytest.raises(HeaderError, match=r"^forward request truncated") as caught:
            await read_request(reader_with(REQUEST_BYTES[:length]), 1.0)
        assert caught.value.status is ForwardStatus.BAD_HEADER


async def test_a_stream_ending_inside_a_response_is_a_truncated_header() -> None:
    encoded = encode_response(ForwardResponse(ForwardStatus.OK, "ok"))

    for length in range(len(encoded)):
        with pytest.raises(HeaderError, match=r"^response truncated"):
            await read_response(reader_with(encoded[:length]), 1.0)


# --- malformed requests ---


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (b"G", ForwardStatus.BAD_HEADER, r"does not start with b'HRN'"),
        (b"HRX", ForwardStatus.BAD_HEADER, r"does not start with b'HRN'"),
        (b"GET / HTTP/1.1\r\n", ForwardStatus.BAD_HEADER, r"does not start with b'HRN'"),
        (b"HRN\x00", ForwardStatus.UNSUPPORTED_VERSION, r"version 0 is not supported"),
        (b"HRN\x02", ForwardStatus.UNSUPPORTED_VERSION, r"version 2 is not supported"),
        (b"HRN\x01\x02\x01", ForwardStatus.BAD_HEADER, r"body of 513 bytes exceeds 512"),
        (b"HRN\x01\xff\xff", ForwardStatus.BAD_HEADER, r"body of 65535 bytes exceeds 512"),
    ],
)
def test_a_bad_prefix_is_refused_as_soon_as_its_bytes_are_seen(
    data: bytes, status: ForwardStatus, message: str
) -> None:
    with pytest.raises(HeaderError, match=message) as caught:
        parse_request(data)

    assert caught.value.status is status


@pytest.mark.parametrize(
    ("request_body", "message"),
    [
        (b"", r"^forward request body ends inside the protocol$"),
        (body(protocol=0), r"^unknown protocol 0$"),
        (body(protocol=3), r"^unknown protocol 3$"),
        (body(target=b"\x04\x7f\x00\x00\x01"), r"^unknown target address type 4$"),
        (body(target=b"\x00"), r"^unknown target address type 0$"),
        (body(client=b"\x03\x04host"), r"^unknown client address type 3$"),
        (b"\x01\x01\x7f\x00", r"^forward request body ends inside the target address$"),
        (body(target=b"\x03\x00"), r"^target '' is not a valid domain name$"),
        (body(target=b"\x03\x04-a.b"), r"^target '-a.b' is not a valid domain name$"),
        (body(target=b"\x03\x04a-.b"), r"^target 'a-.b' is not a valid domain name$"),
        (body(target=b"\x03\x04a..b"), r"^target 'a..b' is not a valid domain name$"),
        (body(target=b"\x03\x02a."), r"^target 'a.' is not a valid domain name$"),
        (body(target=b"\x03\x05a_b.c"), r"^target 'a_b.c' is not a valid domain name$"),
        (body(target=b"\x03\x03a b"), r"^target 'a b' is not a valid domain name$"),
        (body(target=b"\x03\x02\xc3\xa9"), r"^target address is not ASCII$"),
        (body(target=b"\x03\x42" + b"a" * 64 + b".b"), r"is not a valid domain name$"),
        (body(target=b"\x03\x07127.0.1"), r"^target '127.0.1' has an all-numeric last label$"),
        (body(target=b"\x03\x0a2130706433"), r"has an all-numeric last label$"),
        (body(target=b"\x03\x097.0.0.127"), r"^target address '7.0.0.127' is an IP address"),
        (body(target=b"\x03\x03::1"), r"^target address '::1' is an IP address sent as a"),
        (body(target_port=0), r"^target port 0 is out of range 1-65535$"),
        (body(service_id=b"a" * 65), r"^service id of 65 characters exceeds 64$"),
        (body(service_id=b"a.b"), r"^service id 'a.b' is not made of \[A-Za-z0-9_-\]$"),
        (body(service_id=b"\xff"), r"^service id is not ASCII$"),
        (body() + b"\x00", r"^forward request body has 1 trailing bytes$"),
        (body()[:-1], r"^forward request body ends inside the service id$"),
    ],
)
def test_a_bad_body_is_refused_with_a_message_naming_the_field(
    request_body: bytes, message: str
) -> None:
    with pytest.raises(HeaderError, match=message) as caught:
        parse_request(frame(request_body))

    assert caught.value.status is ForwardStatus.BAD_HEADER


def test_a_domain_of_253_characters_is_the_longest_accepted() -> None:
    longest = ".".join(["a" * 63] * 3 + ["b" * 61])  # 253 characters

    request = ForwardRequest(Protocol.TCP, longest, 443, "10.0.0.1", 1)

    assert parse_request(encode_request(request)) == (request, 6 + 1 + 255 + 2 + 5 + 2 + 1)
    with pytest.raises(HeaderError, match="is not a valid domain name"):
        ForwardRequest(Protocol.TCP, longest + "b", 443, "10.0.0.1", 1)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"target_port": 0}, r"^target port 0 is out of range 1-65535$"),
        ({"target_port": 65536}, r"^target port 65536 is out of range 1-65535$"),
        ({"client_port": -1}, r"^client port -1 is out of range 0-65535$"),
        ({"target_host": "exa mple.com"}, r"^target 'exa mple.com' is not a valid domain"),
        ({"target_host": "bücher.de"}, r"^target 'bücher.de' is not a valid domain name$"),
        ({"target_host": "fe80::1%eth0"}, r"^target address 'fe80::1%eth0' has a scope id$"),
        ({"client_ip": "edge.example.com"}, r"client address 'edge.example.com' is not an IP"),
        ({"service_id": "x" * 65}, r"^service id of 65 characters exceeds 64$"),
        ({"service_id": "ünïcode"}, r"^service id 'ünïcode' is not made of"),
    ],
)
def test_a_request_that_cannot_be_sent_cannot_be_built(
    changes: dict[str, object], message: str
) -> None:
    fields: dict[str, object] = {
        "protocol": Protocol.TCP, "target_host": "10.0.0.1", "target_port": 80,
        "client_ip": "10.0.0.2", "client_port": 1234, **changes,
    }  # fmt: skip

    with pytest.raises(HeaderError, match=message):
        ForwardRequest(**fields)  # type: ignore[arg-type]


# --- malformed responses ---


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (b"HTTP/1.1 400", ForwardStatus.BAD_HEADER, r"^response does not start with b'HRN'$"),
        (b"HRN\x09", ForwardStatus.UNSUPPORTED_VERSION, r"^response version 9 is not supported"),
        (b"HRN\x01\x08\x00", ForwardStatus.BAD_HEADER, r"^unknown response status 8$"),
        (b"HRN\x01\x00\x01\xff", ForwardStatus.BAD_HEADER, r"^response message is not UTF-8$"),
    ],
)
def test_a_bad_response_is_refused(data: bytes, status: ForwardStatus, message: str) -> None:
    with pytest.raises(HeaderError, match=message) as caught:
        parse_response(data)

    assert caught.value.status is status


# --- reading off streams and sockets ---


async def test_read_request_leaves_the_payload_in_the_reader() -> None:
    reader = reader_with(REQUEST_BYTES + PAYLOAD)

    assert await read_request(reader, 1.0) == REQUEST
    assert await reader.read() == PAYLOAD


async def test_read_response_leaves_the_payload_in_the_reader() -> None:
    response = ForwardResponse(ForwardStatus.OK, "")
    reader = reader_with(encode_response(response) + PAYLOAD)

    assert await read_response(reader, 1.0) == response
    assert await reader.read() == PAYLOAD


async def test_a_stray_http_request_is_refused_before_the_timeout() -> None:
    reader = reader_with(b"GET ", eof=False)  # fewer bytes than a prefix, and the stream stays open

    with pytest.raises(HeaderError, match=r"does not start with b'HRN'"):
        await read_request(reader, 30.0)


async def test_a_header_that_stalls_times_out_with_what_arrived() -> None:
    reader = reader_with(REQUEST_BYTES[:9], eof=False)

    with pytest.raises(
        HeaderTimeoutError,
        match=r"^no complete forward request within 0.05 s \(9 bytes received\)$",
    ) as caught:
        await read_request(reader, 0.05)

    assert caught.value.status is ForwardStatus.BAD_HEADER


async def test_read_request_from_socket_takes_no_payload_byte() -> None:
    loop = asyncio.get_running_loop()
    edge, agent = socket.socketpair()
    with edge, agent:
        agent.settimeout(0.0)
        edge.sendall(REQUEST_BYTES + PAYLOAD)

        assert await read_request_from_socket(loop, agent, 1.0) == REQUEST
        assert agent.recv(1024) == PAYLOAD


async def test_read_request_from_socket_gathers_a_header_sent_byte_by_byte() -> None:
    loop = asyncio.get_running_loop()
    edge, agent = socket.socketpair()
    with edge, agent:
        agent.settimeout(0.0)

        async def drip() -> None:
            for byte in REQUEST_BYTES + PAYLOAD:
                edge.send(bytes((byte,)))
                await asyncio.sleep(0)

        async with asyncio.TaskGroup() as group:
            reading = group.create_task(read_request_from_socket(loop, agent, 5.0))
            group.create_task(drip())

        assert reading.result() == REQUEST
        assert agent.recv(1024) == PAYLOAD


async def test_read_response_from_socket_takes_no_payload_byte_and_sees_eof() -> None:
    loop = asyncio.get_running_loop()
    response = ForwardResponse(ForwardStatus.TARGET_NOT_ALLOWED, "10.0.0.9:22 is not allowed")
    agent, edge = socket.socketpair()
    with agent, edge:
        edge.settimeout(0.0)
        agent.sendall(encode_response(response) + PAYLOAD)

        assert await read_response_from_socket(loop, edge, 1.0) == response
        assert edge.recv(1024) == PAYLOAD

        agent.sendall(b"HRN\x01\x00")
        agent.shutdown(socket.SHUT_WR)
        with pytest.raises(HeaderError, match=r"^response truncated: the stream ended after 5"):
            await read_response_from_socket(loop, edge, 1.0)


# --- properties ---

_LABELS = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?", fullmatch=True)
_DOMAINS = (
    st.lists(_LABELS, min_size=1, max_size=5)
    .map(".".join)
    .filter(lambda d: len(d) <= 253 and not d.rsplit(".", 1)[-1].isdigit())
)
_IPS = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str)
REQUESTS = st.builds(
    ForwardRequest,
    protocol=st.sampled_from(Protocol),
    target_host=st.one_of(_IPS, _DOMAINS),
    target_port=st.integers(1, 65535),
    client_ip=_IPS,
    client_port=st.integers(0, 65535),
    service_id=st.from_regex(r"[A-Za-z0-9_-]{0,64}", fullmatch=True),
)


@settings(max_examples=300)
@given(request=REQUESTS, payload=st.binary(max_size=16))
def test_any_valid_request_round_trips(request: ForwardRequest, payload: bytes) -> None:
    encoded = encode_request(request)

    assert len(encoded) - 6 <= MAX_BODY_BYTES
    assert parse_request(encoded + payload) == (request, len(encoded))


@settings(max_examples=300)
@given(
    request=REQUESTS,
    client=st.one_of(_IPS, st.sampled_from(["::ffff:10.0.0.1", "010.0.0.1", "not an address"])),
    client_port=st.integers(-1, 65536),
)
def test_a_template_encodes_what_encode_request_does(
    request: ForwardRequest, client: str, client_port: int
) -> None:
    """The edge's per-target template makes the very bytes of the request it stands for, and
    refuses what the request refuses (a client address or port out of the rules)."""
    template = RequestTemplate(
        request.protocol, request.target_host, request.target_port, request.service_id
    )
    try:
        wanted = ForwardRequest(
            request.protocol, request.target_host, request.target_port,
            client, client_port, request.service_id,
        )  # fmt: skip
        expected = encode_request(wanted)
    except HeaderError as exc:
        with pytest.raises(HeaderError, match=re.escape(exc.message)):
            template.encode(client, client_port)
    else:
        assert template.encode(client, client_port) == expected


@settings(max_examples=300)
@given(status=st.sampled_from(ForwardStatus), message=st.text(max_size=300))
def test_any_response_round_trips_with_its_message_cut_to_255_bytes(
    status: ForwardStatus, message: str
) -> None:
    encoded = encode_response(ForwardResponse(status, message))

    parsed = parse_response(encoded + b"payload")

    assert parsed is not None
    response, size = parsed
    assert size == len(encoded)
    assert response.status is status
    assert message.startswith(response.message)
    kept = len(response.message.encode())
    assert kept == len(message.encode()) or 252 <= kept <= 255  # lost: one character, ≤ 4 bytes


def _mutations() -> st.SearchStrategy[bytes]:
    """Valid requests with a byte changed, inserted or dropped, and framed bodies of noise."""
    flipped = st.tuples(REQUESTS.map(encode_request), st.integers(0), st.integers(0, 255)).map(
        lambda t: t[0][: t[1] % len(t[0])] + bytes((t[2],)) + t[0][t[1] % len(t[0]) + 1 :]
    )
    dropped = st.tuples(REQUESTS.map(encode_request), st.integers(0)).map(
        lambda t: t[0][: t[1] % len(t[0])] + t[0][t[1] % len(t[0]) + 1 :]
    )
    noise = st.binary(max_size=MAX_BODY_BYTES + 8).map(frame)
    return st.one_of(flipped, dropped, noise)


def _canonical(data: bytes) -> bytes:
    """``data`` as the encoder writes it: a domain target's name in lower case."""
    if len(data) > 8 and data[7] == 3:  # the target address type
        end = 9 + data[8]
        return data[:9] + data[9:end].lower() + data[end:]
    return data


@settings(max_examples=500)
@given(data=st.one_of(st.binary(max_size=600), _mutations()))
@example(data=REQUEST_BYTES + b"extra")
@example(data=b"HRN\x01\x00\x00")
def test_any_bytes_parse_to_incomplete_a_request_they_start_with_or_a_header_error(
    data: bytes,
) -> None:
    try:
        parsed = parse_request(data)
    except HeaderError:
        return
    if parsed is None:
        assert len(data) < 6 + int.from_bytes(data[4:6], "big")
        return
    request, size = parsed
    assert encode_request(request) == _canonical(data[:size])


@settings(max_examples=300)
@given(data=st.one_of(st.binary(max_size=600), _mutations(), REQUESTS.map(encode_request)))
@example(data=REQUEST_BYTES + b"extra")
@example(data=b"HRN\x01\x00\x00")
@example(data=b"HRN\x01\x00")
def test_take_request_reads_off_a_socket_what_parse_request_parses(data: bytes) -> None:
    """Whatever the socket holds: the same request, incomplete, or the same error as the
    parser; and no byte past the request is taken."""
    edge, agent = socket.socketpair()
    with edge, agent:
        agent.settimeout(0.0)
        if data:
            edge.sendall(data)
        buf = bytearray()
        refused: ForwardStatus | None = None
        try:
            expected = parse_request(data)
        except HeaderError as exc:
            expected, refused = None, exc.status
        if refused is not None:
            with pytest.raises(HeaderError) as caught:
                header.take_request(agent, buf)
            assert caught.value.status is refused
            return
        taken = header.take_request(agent, buf)
        if expected is None:
            assert taken is None
            assert bytes(buf) == data  # kept for the next call
            return
        request, size = expected
        assert taken == request
        try:
            rest = agent.recv(1024)
        except BlockingIOError:
            rest = b""
        assert rest == data[size:]


@settings(max_examples=500)
@given(request=st.one_of(REQUESTS.map(encode_request), _mutations()))
def test_the_ipv4_fast_path_decodes_as_the_general_decoder(request: bytes) -> None:
    """The usual request shape has a decoder of its own; whatever it takes, it reads exactly as
    the general one does, and it leaves everything else (errors included) to that one."""
    try:
        general: ForwardRequest | str = header._decode_any_request(request)
    except HeaderError as exc:
        general = exc.message
    except (IndexError, struct.error):
        return  # a buffer the size check in front of both would have refused
    fast = header._decode_ipv4_request(request)
    if fast is not None:
        assert fast == general
        assert repr(fast) == repr(general)


_USUAL = encode_request(ForwardRequest(Protocol.TCP, "10.0.0.1", 80, "10.0.0.2", 5000, "svc_1"))


def _patched(at: int, value: bytes) -> bytes:
    return _USUAL[:at] + value + _USUAL[at + len(value) :]


@pytest.mark.parametrize(
    "request_bytes",
    [
        _USUAL,
        _patched(6, b"\x03"),  # an unknown protocol
        _patched(12, b"\x00\x00"),  # target port 0
        _patched(19, b"\x00\x00"),  # client port 0: allowed
        _patched(21, b"\x06"),  # a service id longer than what follows
        _patched(22, b"s"),  # still valid
        _patched(22, b"?"),  # a character outside [A-Za-z0-9_-]
        _USUAL + b"x",  # a trailing byte
    ],
    ids=["usual", "protocol", "target-port-0", "client-port-0", "id-length", "id-ok",
         "id-char", "trailing"],
)  # fmt: skip
def test_the_ipv4_fast_path_agrees_on_each_field_rule(request_bytes: bytes) -> None:
    try:
        general: ForwardRequest | str = header._decode_any_request(request_bytes)
    except HeaderError as exc:
        general = exc.message
    fast = header._decode_ipv4_request(request_bytes)
    assert fast is None or fast == general
    assert isinstance(general, str) or fast is not None  # every valid usual request goes fast
