import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from heron_core.duration import (
    MAX_DURATION_MS,
    DurationError,
    format_duration_ms,
    normalize_duration,
    parse_duration_ms,
)


@pytest.mark.parametrize(
    ("text", "milliseconds"),
    [
        ("30s", 30_000),
        ("2m", 120_000),
        ("1h30m", 5_400_000),
        ("500ms", 500),
        ("1.5s", 1_500),
        (" 90s ", 90_000),
    ],
)
def test_parses_go_style_durations(text: str, milliseconds: int) -> None:
    assert parse_duration_ms(text) == milliseconds


@pytest.mark.parametrize(
    "text", ["", "30", "s", "-5s", "5 s", "1d", "0s", "0.0001s", "169h", "1h30", "ms30"]
)
def test_refuses_what_is_not_a_positive_duration(text: str) -> None:
    with pytest.raises(DurationError):
        parse_duration_ms(text)


def test_canonical_spelling() -> None:
    assert normalize_duration("90s") == "1m30s"
    assert normalize_duration("1500ms") == "1.5s"
    assert normalize_duration("60m") == "1h"
    assert format_duration_ms(250) == "250ms"


@given(st.integers(min_value=1, max_value=MAX_DURATION_MS))
def test_format_then_parse_round_trips(milliseconds: int) -> None:
    assert parse_duration_ms(format_duration_ms(milliseconds)) == milliseconds


@given(st.text(max_size=20))
def test_never_raises_anything_but_duration_error(text: str) -> None:
    with contextlib.suppress(DurationError):
        parse_duration_ms(text)
