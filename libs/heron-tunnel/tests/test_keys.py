import base64
import re
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from heron_tunnel.keys import (
    generate_private_key,
    load_or_create_private_key,
    parse_key,
    public_key_of,
)


def wg(*argv: str, stdin: str = "") -> str:
    return subprocess.run(
        ["wg", *argv], input=stdin, capture_output=True, text=True, check=True, timeout=5
    ).stdout.strip()


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_wg_pubkey_agrees_with_public_key_of_on_generated_keys() -> None:
    for _ in range(5):
        private = generate_private_key()

        assert wg("pubkey", stdin=private + "\n") == public_key_of(private)


def test_public_key_of_agrees_with_wg_on_keys_from_wg_genkey() -> None:
    private = wg("genkey")

    assert public_key_of(private) == wg("pubkey", stdin=private + "\n")


def test_generated_keys_are_clamped_like_wg_genkey_and_never_repeat() -> None:
    keys = {generate_private_key() for _ in range(100)}

    assert len(keys) == 100
    for key in keys:
        raw = base64.b64decode(key)
        assert raw[0] & 7 == 0
        assert raw[31] & 0xC0 == 0x40


def test_parse_key_returns_the_key_without_surrounding_whitespace() -> None:
    key = generate_private_key()

    assert parse_key(f"  {key}\n") == key


@pytest.mark.parametrize(
    "text",
    [
        "",
        "abc",
        base64.b64encode(bytes(31)).decode(),
        base64.b64encode(bytes(33)).decode(),
        base64.b64encode(bytes(32)).decode()[:-1],  # padding missing
        base64.urlsafe_b64encode(b"\xff" * 32).decode(),  # not the standard alphabet
        base64.b64encode(bytes(32)).decode()[:-2] + "B=",  # non-canonical trailing bits
        "not base64 at all but forty-four chars long!",
    ],
)
def test_parse_key_refuses_anything_but_32_bytes_of_base64(text: str) -> None:
    with pytest.raises(ValueError, match=r"not a WireGuard key: expected 32 bytes") as caught:
        parse_key(text)

    assert not text or text not in str(caught.value)  # the text may be a private key


def test_public_key_of_refuses_a_malformed_private_key() -> None:
    with pytest.raises(ValueError, match="not a WireGuard key"):
        public_key_of("abc")


def test_a_new_key_file_is_private_in_a_private_directory(tmp_path: Path) -> None:
    path = tmp_path / "state" / "wireguard.key"

    key = load_or_create_private_key(path)

    assert path.read_text() == key + "\n"
    assert mode_of(path) == 0o600
    assert mode_of(path.parent) == 0o700
    assert [p.name for p in path.parent.iterdir()] == [
        "wireguard.key"
    ]  # no temporary file left behind
    assert wg("pubkey", stdin=path.read_text()) == public_key_of(key)


def test_an_existing_key_file_is_read_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "wireguard.key"

    first = load_or_create_private_key(path)
    second = load_or_create_private_key(path)

    assert first == second


def test_a_key_written_by_wg_genkey_is_used(tmp_path: Path) -> None:
    path = tmp_path / "wireguard.key"
    private = wg("genkey")
    path.write_text(private + "\n")
    path.chmod(0o600)

    assert load_or_create_private_key(path) == private


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_a_key_file_others_may_access_is_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "wireguard.key"
    path.write_text(generate_private_key() + "\n")
    path.chmod(mode)

    with pytest.raises(
        PermissionError,
        match=rf"{re.escape(str(path))}.*mode 0{mode:o}.*chmod 600 {re.escape(str(path))}",
    ):
        load_or_create_private_key(path)


def test_a_key_file_without_a_key_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "wireguard.key"
    path.write_text("hello\n")
    path.chmod(0o600)

    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}.*not a WireGuard key"):
        load_or_create_private_key(path)


def test_concurrent_creators_end_up_with_the_same_key(tmp_path: Path) -> None:
    path = tmp_path / "wireguard.key"
    start = threading.Barrier(8)
    keys: list[str] = []

    def create() -> None:
        start.wait()
        keys.append(load_or_create_private_key(path))

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(keys) == 8
    assert set(keys) == {path.read_text().strip()}
    assert [p.name for p in tmp_path.iterdir()] == ["wireguard.key"]
