"""One logging setup for every Heron process: structlog, JSON in production, console on a TTY.

Request or connection context goes in ``structlog.contextvars``; stdlib loggers (uvicorn, alembic)
are routed through the same renderer so a process writes one format.
"""

import logging
import sys

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
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
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
