"""The secret token format: what management issues and the stack runner makes for its edge."""

from heron_core.secret_tokens import (
    PROXY_TOKEN_PREFIX,
    TOKEN_CHARS,
    TOKEN_PREFIX,
    generate_token,
    is_well_formed,
)


def test_generated_tokens_are_well_formed_for_their_prefix_only() -> None:
    token = generate_token(PROXY_TOKEN_PREFIX)

    assert len(token) == TOKEN_CHARS
    assert is_well_formed(token, PROXY_TOKEN_PREFIX)
    assert not is_well_formed(token, TOKEN_PREFIX)


def test_a_changed_character_breaks_the_checksum() -> None:
    token = generate_token(PROXY_TOKEN_PREFIX)
    position = len(PROXY_TOKEN_PREFIX) + 3
    changed = token[:position] + ("a" if token[position] != "a" else "b") + token[position + 1 :]

    assert not is_well_formed(changed, PROXY_TOKEN_PREFIX)
    assert not is_well_formed(token[:-1], PROXY_TOKEN_PREFIX)
    assert not is_well_formed("hpx_" + "!" * 30 + token[-6:], PROXY_TOKEN_PREFIX)
    assert not is_well_formed("correct horse battery staple", PROXY_TOKEN_PREFIX)
