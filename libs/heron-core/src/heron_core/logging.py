"""One logging setup for every Heron process: structlog, JSON in production, console on a TTY.

Request or connection context goes in ``structlog.contextvars``; stdlib loggers (uvicorn, alembic)
are routed through the same renderer so a process writes one format.
"""

import json
import logging
import sys
import time

import structlog
import structlog.tracebacks

from heron_core.settings import LogFormat

#: structured tracebacks without frame locals: a local may hold a token or password
_DICT_TRACEBACKS = structlog.processors.ExceptionRenderer(
    structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
)


def configure_logging(
    service: str, *, level: str = "info", fmt: LogFormat = LogFormat.AUTO
) -> None:
    """Configure structlog and the stdlib root logger for ``service``; call once, at start-up."""
    use_console = fmt is LogFormat.CONSOLE or (fmt is LogFormat.AUTO and sys.stderr.isatty())
    _state.update(service=service, json=not use_console, level=logging.getLevelName(level.upper()))
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer() if use_console else structlog.processors.JSONRenderer()
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    finishing: list[structlog.typing.Processor] = (
        [renderer] if use_console else [_DICT_TRACEBACKS, renderer]
    )
    structlog.configure(
        # a disabled level is dropped first, before any processor spends time on it
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder(), _drop_color_message],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _add_service(service),
            *finishing,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access",):  # the API logs its own one line per request
        logging.getLogger(noisy).disabled = True


def _drop_color_message(
    _: object, __: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    # uvicorn repeats its message with ANSI colour codes as an ``extra``; the renderer colours
    event.pop("color_message", None)
    return event


def _add_service(service: str) -> structlog.typing.Processor:
    def add(_: object, __: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
        event.setdefault("service", service)
        return event

    return add


_state: dict[str, object] = {"service": "", "json": False, "level": logging.INFO}


class LineLogger:
    """Info lines for hot paths (one per request): the same JSON as every other line, written
    straight to stderr without structlog's and the stdlib's machinery (a few µs instead of
    tens). With the console format it hands over to structlog, which reads better.

    ``enabled`` is decided when it is made (after ``configure_logging``): check it before
    building the fields of a line nobody will read.
    """

    def __init__(self, name: str, **context: object) -> None:
        self._structlog = structlog.get_logger(name)
        self._json = bool(_state["json"])
        level = _state["level"]
        self.enabled = not isinstance(level, int) or level <= logging.INFO
        self._context = {**context, "level": "info", "service": _state["service"]}
        self._write = sys.stderr.write
        self._second = -1
        self._stamp = ""

    def info(self, event: str, **fields: object) -> None:
        if not self.enabled:
            return
        if not self._json:
            self._structlog.info(event, **fields)
            return
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        fields["event"] = event
        fields.update(self._context)
        fields["timestamp"] = f"{self._stamp}.{int((now - second) * 1_000_000):06d}Z"
        self._write(json.dumps(fields, default=str) + "\n")
