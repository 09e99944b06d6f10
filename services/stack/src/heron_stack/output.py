"""Children's output, relayed line by line with a ``name |`` prefix.

The runner reads each child's stdout and stderr from pipes; every complete line goes to the
runner's own stdout (or stderr) as ``name       | line``, names padded so the bars align.
"""

import contextlib
from typing import BinaryIO

#: a line longer than this is written in pieces; far above any log line, and bounds memory
MAX_LINE_BYTES = 64 * 1024


class PrefixedOutput:
    """Writes lines under a service's name to one binary stream."""

    def __init__(self, stream: BinaryIO, *, name_width: int) -> None:
        self._stream = stream
        self._name_width = name_width

    def write_line(self, name: str, line: bytes) -> None:
        prefix = f"{name:<{self._name_width}} | ".encode()
        with contextlib.suppress(BrokenPipeError):  # nobody reads the runner any more: drop it
            self._stream.write(prefix + line.rstrip(b"\r") + b"\n")
            self._stream.flush()


class LineRelay:
    """Cuts one pipe's chunks into lines and writes each under ``name``."""

    def __init__(self, name: str, output: PrefixedOutput) -> None:
        self._name = name
        self._output = output
        self._pending = bytearray()

    def feed(self, data: bytes) -> None:
        self._pending += data
        *lines, rest = self._pending.split(b"\n")
        for line in lines:
            self._output.write_line(self._name, bytes(line))
        self._pending = bytearray(rest)
        while len(self._pending) >= MAX_LINE_BYTES:
            self._output.write_line(self._name, bytes(self._pending[:MAX_LINE_BYTES]))
            del self._pending[:MAX_LINE_BYTES]

    def close(self) -> None:
        """The pipe is closed: write an unterminated last line, if any."""
        if self._pending:
            self._output.write_line(self._name, bytes(self._pending))
            self._pending.clear()
