"""``heron-stack``: settings, logging, the table of services, then run until stopped."""

import asyncio
import logging
import sys

import structlog
from pydantic import ValidationError

from heron_core.errors import ConfigError, HeronError
from heron_core.logging import configure_logging
from heron_stack.banner import render_banner
from heron_stack.runner import EXIT_STARTUP_FAILED, run_stack
from heron_stack.settings import StackSettings
from heron_stack.specs import stack_specs

#: settings that cannot work: nothing was started
EXIT_CONFIG = 2


def main() -> None:
    try:
        settings = StackSettings()
    except (ConfigError, ValidationError) as exc:
        sys.stderr.write(f"heron-stack: {exc}\n")  # logging is not set up yet
        sys.exit(EXIT_CONFIG)
    configure_logging("stack", level=settings.log_level, fmt=settings.log_format)
    # httpx logs every request at info: that would be one line per ready probe
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        settings.data_path.mkdir(parents=True, exist_ok=True)
        specs = stack_specs(settings, stderr_is_tty=sys.stderr.isatty())
    except (OSError, HeronError) as exc:
        structlog.get_logger(__name__).error("stack not started", error=str(exc))
        sys.exit(EXIT_STARTUP_FAILED)
    sys.exit(asyncio.run(run_stack(specs, settings, on_ready=lambda: _print_banner(settings))))


def _print_banner(settings: StackSettings) -> None:
    # the children's lines go to sys.stdout.buffer; the banner must not overtake them
    sys.stdout.buffer.write(render_banner(settings).encode())
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
