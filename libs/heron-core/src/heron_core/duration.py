"""Go-style duration strings (``30s``, ``2m``, ``1h30m``, ``500ms``), as the service model uses them.

Durations are kept to the millisecond: finer precision means nothing for a proxy timeout.
"""

import re

_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
MAX_DURATION_MS = 7 * 24 * 3_600_000  # a week: anything longer is a typo, not a timeout


class DurationError(ValueError):
    """A string that is not a valid positive duration."""


def parse_duration_ms(text: str) -> int:
    """Milliseconds in ``text``; raises DurationError with the reason when it is not a duration."""
    stripped = text.strip()
    if not stripped:
        raise DurationError("duration is empty: use a number with a unit, e.g. '30s' or '2m'")
    position, total = 0, 0.0
    while position < len(stripped):
        match = _PART.match(stripped, position)
        if match is None:
            raise DurationError(
                f"{text!r} is not a duration: use numbers with units ms, s, m, h, e.g. '30s' or '1m30s'"
            )
        total += float(match.group(1)) * _UNIT_MS[match.group(2)]
        position = match.end()
    milliseconds = round(total)
    if milliseconds < 1:
        raise DurationError(f"duration {text!r} must be at least 1ms")
    if milliseconds > MAX_DURATION_MS:
        raise DurationError(f"duration {text!r} is longer than the maximum of 168h")
    return milliseconds


def format_duration_ms(milliseconds: int) -> str:
    """The canonical spelling of a duration: ``90000`` → ``1m30s``, ``500`` → ``500ms``."""
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1_000)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
    if seconds and millis:
        parts.append(f"{seconds}.{millis:03d}".rstrip("0") + "s")
    elif seconds:
        parts.append(f"{seconds}s")
    elif millis:
        parts.append(f"{millis}ms")
    return "".join(parts) or "0s"


def normalize_duration(text: str) -> str:
    """Validate ``text`` and return its canonical spelling."""
    return format_duration_ms(parse_duration_ms(text))
