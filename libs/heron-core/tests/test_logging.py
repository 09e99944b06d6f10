"""configure_logging: one JSON line per record, from structlog and stdlib loggers alike."""

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from heron_core.logging import configure_logging
from heron_core.settings import LogFormat


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def lines(err: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in err.splitlines() if line]


def test_structlog_and_stdlib_records_share_one_json_format(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("tests", level="info", fmt=LogFormat.JSON)
    structlog.get_logger("x").info("hello", answer=42)
    logging.getLogger("uvicorn.error").info(
        "Started server process [%d]", 7, extra={"color_message": "Started \x1b[36m%d\x1b[0m"}
    )
    logging.getLogger("below").debug("not shown at info")

    first, second = lines(capsys.readouterr().err)
    assert first["event"] == "hello" and first["answer"] == 42
    assert first["service"] == "tests" and first["level"] == "info" and "timestamp" in first
    assert second["event"] == "Started server process [7]"
    assert second["service"] == "tests"
    assert "color_message" not in second  # uvicorn's ANSI duplicate is dropped


def test_exceptions_become_structured_tracebacks(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("tests", fmt=LogFormat.JSON)
    try:
        raise ValueError("boom")
    except ValueError:
        structlog.get_logger().exception("failed")
    (record,) = lines(capsys.readouterr().err)
    assert record["event"] == "failed"
    assert "ValueError" in json.dumps(record["exception"])


def test_tracebacks_never_carry_local_variables(capsys: pytest.CaptureFixture[str]) -> None:
    def authenticate(token: str) -> None:
        raise RuntimeError("database is locked")

    configure_logging("tests", fmt=LogFormat.JSON)
    try:
        authenticate("hrn_thisMustNeverBeLogged")
    except RuntimeError:
        structlog.get_logger().exception("request failed")
    err = capsys.readouterr().err
    assert "database is locked" in err
    assert "hrn_thisMustNeverBeLogged" not in err
