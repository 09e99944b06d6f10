"""The ClientHello parser: real hellos from OpenSSL, hand-built ones split anywhere, and fuzzing.

The builder below writes ClientHellos field by field (RFC 8446 §4.1.2) so a test can leave any
part out, break it, or cut the handshake message into records at any offset.
"""

import ipaddress
import itertools
import ssl
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from heron_edge.tls.clienthello import (
    MAX_CLIENT_HELLO_BYTES,
    NOT_TLS,
    ClientHello,
    MalformedClientHelloError,
    NeedMore,
    NotTls,
    parse_client_hello,
)

# --- a ClientHello builder -------------------------------------------------------------------


def vector(data: bytes, length_bytes: int) -> bytes:
    return len(data).to_bytes(length_bytes, "big") + data


def extension(extension_type: int, data: bytes) -> bytes:
    return extension_type.to_bytes(2, "big") + vector(data, 2)


def sni(*names: bytes, name_type: int = 0) -> bytes:
    entries = b"".join(bytes((name_type,)) + vector(name, 2) for name in names)
    return extension(0, vector(entries, 2))


def alpn(*names: bytes) -> bytes:
    return extension(16, vector(b"".join(vector(name, 1) for name in names), 2))


def hello_body(
    extensions: Sequence[bytes] | None = (),
    *,
    version: int = 0x0303,
    session_id: bytes = bytes(32),
    cipher_suites: bytes = b"\x13\x01\x13\x02",
    compression: bytes = b"\x00",
) -> bytes:
    body = version.to_bytes(2, "big") + bytes(range(32)) + vector(session_id, 1)
    body += vector(cipher_suites, 2) + vector(compression, 1)
    if extensions is not None:
        body += vector(b"".join(extensions), 2)
    return body


def handshake(body: bytes, message_type: int = 1) -> bytes:
    return bytes((message_type,)) + len(body).to_bytes(3, "big") + body


def records(
    message: bytes, cuts: Iterable[int] = (), *, version: int = 0x0301, content_type: int = 22
) -> bytes:
    """``message`` in records, a new one starting at each offset in ``cuts``."""
    edges = [0, *sorted(cuts), len(message)]
    return b"".join(
        bytes((content_type,)) + version.to_bytes(2, "big") + vector(message[a:b], 2)
        for a, b in itertools.pairwise(edges)
    )


def boundaries(message_size: int, cuts: Iterable[int]) -> list[int]:
    """Where each record's header ends and where the record ends: what ``NeedMore`` asks for."""
    edges = [0, *sorted(cuts), message_size]
    ends: list[int] = []
    position = 0
    for a, b in itertools.pairwise(edges):
        ends += [position + 5, position + 5 + b - a]
        position += 5 + b - a
    return ends


def hello(*extensions: bytes) -> bytes:
    return records(handshake(hello_body(extensions)))


@dataclass(frozen=True)
class Built:
    wire: bytes
    boundaries: list[int]
    expected: ClientHello


labels = st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=63)
host_names = st.builds(
    lambda parts, dot: ".".join(parts) + ("." if dot else ""),
    st.lists(labels, min_size=1, max_size=4),
    st.booleans(),
).filter(lambda name: len(name) <= 255)
protocol_names = st.binary(min_size=1, max_size=16)
other_extensions = st.dictionaries(
    st.integers(1, 0xFFFF).filter(lambda t: t != 16), st.binary(max_size=40), max_size=5
)


@st.composite
def built_hellos(draw: st.DrawFn) -> Built:
    name = draw(st.none() | host_names)
    protocols = draw(st.lists(protocol_names, max_size=4))
    extensions = [extension(t, data) for t, data in draw(other_extensions).items()]
    if name is not None:
        extensions.append(sni(name.encode()))
    if protocols:
        extensions.append(alpn(*protocols))
    extensions = draw(st.permutations(extensions))
    no_extensions = not extensions and draw(st.booleans())
    message = handshake(hello_body(None if no_extensions else extensions))
    cuts = draw(st.lists(st.integers(1, len(message) - 1), max_size=6, unique=True))
    wire = records(message, cuts, version=draw(st.sampled_from([0x0300, 0x0301, 0x0303])))
    expected = ClientHello(
        name.lower().removesuffix(".") if name is not None else None,
        tuple(p.decode("latin-1") for p in protocols),
        len(wire),
    )
    return Built(wire, boundaries(len(message), cuts), expected)


# --- hellos OpenSSL writes -------------------------------------------------------------------


def openssl_hello(
    server_hostname: str | None,
    protocols: Sequence[str] = (),
    maximum_version: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED,
) -> bytes:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = server_hostname is not None
    context.maximum_version = maximum_version
    if protocols:
        context.set_alpn_protocols(list(protocols))
    outgoing = ssl.MemoryBIO()
    client = context.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()


def is_ip_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@given(
    host_names,
    st.lists(st.text(string.ascii_letters + string.digits + "/.-", min_size=1, max_size=12)),
    st.sampled_from([ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.MAXIMUM_SUPPORTED]),
)
def test_openssl_hellos_give_their_name_and_protocols(
    name: str, protocols: list[str], maximum_version: ssl.TLSVersion
) -> None:
    assume(not is_ip_address(name))
    wire = openssl_hello(name, protocols, maximum_version)
    assert parse_client_hello(wire) == ClientHello(
        name.lower().removesuffix("."), tuple(protocols), len(wire)
    )


@pytest.mark.parametrize("server_hostname", [None, "192.0.2.7", "2001:db8::7"])
def test_an_openssl_hello_without_a_name_has_none(server_hostname: str | None) -> None:
    wire = openssl_hello(server_hostname)
    assert parse_client_hello(wire) == ClientHello(None, (), len(wire))


def test_a_hello_over_two_records_from_openssl_parses_whole() -> None:
    protocols = [f"{i:03d}" + "p" * 247 for i in range(80)]  # 20 KB of ALPN: over one record
    wire = openssl_hello("big.example.com", protocols)
    first_record = 5 + int.from_bytes(wire[3:5], "big")
    assert len(wire) > first_record  # OpenSSL split it
    result = parse_client_hello(wire, max_size=65536)
    assert result == ClientHello("big.example.com", tuple(protocols), len(wire))
    with pytest.raises(MalformedClientHelloError, match="larger than 16404 bytes"):
        parse_client_hello(wire)
    assert MAX_CLIENT_HELLO_BYTES == 16404


# --- built hellos: whole, in prefixes, with trailing bytes, bounded -------------------------


@given(built_hellos(), st.binary(max_size=64))
def test_a_hello_parses_whatever_follows_it(built: Built, trailing: bytes) -> None:
    assert parse_client_hello(built.wire + trailing) == built.expected


@given(built_hellos(), st.sampled_from([bytes, bytearray, memoryview]))
def test_every_prefix_asks_for_the_next_record_header_or_the_rest_of_the_record(
    built: Built, kind: type[bytes] | type[bytearray] | type[memoryview]
) -> None:
    for size in range(len(built.wire)):
        wanted = min(end for end in built.boundaries if end > size)
        assert parse_client_hello(kind(built.wire[:size])) == NeedMore(wanted)


@given(built_hellos(), st.data())
def test_max_size_bounds_the_hello_and_every_request_for_more(
    built: Built, data: st.DataObject
) -> None:
    max_size = data.draw(st.integers(0, len(built.wire) + 8), label="max_size")

    def parse_every_prefix() -> None:
        for size in range(len(built.wire) + 1):
            result = parse_client_hello(built.wire[:size], max_size=max_size)
            if isinstance(result, NeedMore):
                assert size < result.at_least <= max_size
            else:
                assert result == built.expected

    if len(built.wire) <= max_size:
        parse_every_prefix()
    else:
        with pytest.raises(MalformedClientHelloError, match=f"larger than {max_size} bytes$"):
            parse_every_prefix()


@given(st.data())
def test_a_body_cut_short_is_malformed(data: st.DataObject) -> None:
    body = hello_body([sni(b"a.example"), alpn(b"h2")])
    without_extensions = 2 + 32 + 1 + 32 + 2 + 4 + 1 + 1
    cut = data.draw(st.integers(0, len(body) - 1).filter(lambda c: c != without_extensions))
    with pytest.raises(MalformedClientHelloError):
        parse_client_hello(records(handshake(body[:cut])))


def test_a_hello_without_extensions_ends_after_its_compression_methods() -> None:
    wire = records(handshake(hello_body(None)))
    assert parse_client_hello(wire) == ClientHello(None, (), len(wire))


def test_the_handshake_header_may_itself_be_split() -> None:
    message = handshake(hello_body([sni(b"Split.Example.")]))
    wire = records(message, [1, 2, 3, 4])
    assert parse_client_hello(wire) == ClientHello("split.example", (), len(wire))


def test_bytes_after_the_hello_in_its_record_are_ignored() -> None:
    message = handshake(hello_body([sni(b"a.example")]))
    wire = records(message + handshake(b"", message_type=20))
    assert parse_client_hello(wire) == ClientHello("a.example", (), len(wire))


def test_a_callers_bytearray_stays_resizable_after_an_error() -> None:
    buffer = bytearray(hello(sni(b"a.example"), sni(b"b.example")))
    with pytest.raises(MalformedClientHelloError) as caught:
        parse_client_hello(buffer)
    buffer.clear()  # a memoryview kept alive by the traceback would make this raise BufferError
    assert caught.value is not None


# --- what is not a ClientHello ---------------------------------------------------------------


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n", id="http"),
        pytest.param(b"G", id="one byte of http"),
        pytest.param(b"PRI * HTTP/2.0\r\n", id="http/2 preface"),
        pytest.param(b"SSH-2.0-OpenSSH_9.6\r\n", id="ssh"),
        pytest.param(bytes.fromhex("802e0103010015000000100000390000380000350000"), id="sslv2"),
    ],
)
def test_other_protocols_are_not_tls(wire: bytes) -> None:
    assert parse_client_hello(wire) is NOT_TLS
    assert isinstance(parse_client_hello(wire), NotTls)


BROKEN: list[tuple[bytes, str]] = [
    (b"\x15\x03\x03\x00\x02\x02\x28", "TLS alert record where a ClientHello belongs"),
    (b"\x17", "application_data record"),
    (b"\x16\x02", r"record version 2\.x is not TLS"),
    (b"\x16\x03\x05", r"record version 3\.5 is unknown"),
    (b"\x16\x03\x01\x00\x00", "empty handshake record"),
    (b"\x16\x03\x01\x40\x01", "record of 16385 bytes exceeds 16384"),
    (records(handshake(hello_body(), message_type=2)), "type 2 is not a ClientHello"),
    (b"\x16\x03\x01\x00\x01\x02", "type 2 is not a ClientHello"),
    (records(handshake(b"\x00" * 20000)[:4]), "larger than 16404 bytes"),
    (
        records(handshake(hello_body()), [10])[:15] + b"\x15\x03\x03\x00\x01",
        "alert record inside the ClientHello",
    ),
    (records(handshake(hello_body(version=0x0202))), "version 0x0202 is not TLS"),
    (records(handshake(hello_body(session_id=bytes(33)))), "legacy_session_id of 33 bytes"),
    (records(handshake(hello_body(cipher_suites=b"\x13\x01\x13"))), "cipher_suites of odd length"),
    (records(handshake(hello_body(cipher_suites=b""))), "cipher_suites of 0 bytes"),
    (records(handshake(hello_body(compression=b""))), "compression_methods of 0 bytes"),
    (records(handshake(hello_body([b"\x00"]))), "truncated in extension type"),
    (records(handshake(hello_body() + b"\x00")), "1 stray bytes after extensions"),
    (records(handshake(hello_body()[:-1])), "truncated in extensions"),
    (hello(sni(b"a.example"), sni(b"b.example")), "extension 0 sent twice"),
    (hello(alpn(b"h2"), extension(7, b""), alpn(b"h2")), "extension 16 sent twice"),
    (hello(extension(0, b"")), "truncated in server_name_list"),
    (hello(extension(0, b"\x00\x00")), "server_name_list of 0 bytes"),
    (hello(extension(0, vector(b"\x00\x00\x01a", 2) + b"\x00")), "stray bytes after server"),
    (hello(sni(b"a.example", b"b.example")), "two host names"),
    (hello(sni(b"")), "server name of 0 bytes"),
    (hello(sni(b"a\x00.example")), "not a DNS host name"),
    (hello(sni(b"a b.example")), "not a DNS host name"),
    (hello(sni("bücher.example".encode())), "not a DNS host name"),
    (hello(sni(b"a..example")), "not a DNS host name"),
    (hello(sni(b".")), "not a DNS host name"),
    (hello(sni(b"a" * 64 + b".example")), "not a DNS host name"),
    (hello(sni(b"a." * 128)), "server name of 256 bytes exceeds 255"),
    (hello(alpn()), "protocol_name_list of 0 bytes"),
    (hello(alpn(b"h2", b"")), "protocol name of 0 bytes"),
    (hello(extension(16, vector(b"\x05h2", 2))), "truncated in protocol name"),
]


@pytest.mark.parametrize(("wire", "message"), [pytest.param(*case, id=case[1]) for case in BROKEN])
def test_broken_hellos_are_malformed(wire: bytes, message: str) -> None:
    with pytest.raises(MalformedClientHelloError, match=message):
        parse_client_hello(wire)


def test_names_of_other_types_are_skipped_and_alpn_names_kept_byte_for_byte() -> None:
    wire = hello(sni(b"\xff anything", name_type=7), alpn(b"h2", b"\xe9\x00x"))
    assert parse_client_hello(wire) == ClientHello(None, ("h2", "\xe9\x00x"), len(wire))


# --- fuzzing: nothing but MalformedClientHelloError escapes ----------------------------------


def parse_anything(wire: bytes) -> None:
    try:
        result = parse_client_hello(wire)
    except MalformedClientHelloError:
        return
    if isinstance(result, ClientHello):
        assert 0 < result.size <= len(wire)
    elif isinstance(result, NeedMore):
        assert len(wire) < result.at_least <= MAX_CLIENT_HELLO_BYTES


@given(st.binary(max_size=300))
def test_random_bytes_never_raise_anything_else(wire: bytes) -> None:
    parse_anything(wire)


@given(st.binary(max_size=300))
def test_random_records_never_raise_anything_else(payload: bytes) -> None:
    parse_anything(b"\x16\x03\x01" + len(payload).to_bytes(2, "big") + payload)
    parse_anything(records(b"\x01" + len(payload).to_bytes(3, "big") + payload))


@given(built_hellos(), st.data())
def test_mutated_hellos_never_raise_anything_else(built: Built, data: st.DataObject) -> None:
    wire = bytearray(built.wire)
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        at = data.draw(st.integers(0, len(wire)), label="at")
        match data.draw(st.sampled_from(["set", "delete", "insert"]), label="how"):
            case "set" if at < len(wire):
                wire[at] = data.draw(st.integers(0, 255), label="byte")
            case "delete":
                del wire[at : at + data.draw(st.integers(1, 8), label="count")]
            case _:
                wire[at:at] = data.draw(st.binary(min_size=1, max_size=8), label="inserted")
    parse_anything(bytes(wire))
