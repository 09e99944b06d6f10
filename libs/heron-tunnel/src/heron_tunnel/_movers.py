"""The two ways a relay direction moves bytes: ``os.splice`` through a pipe, or copying.

Both read at most one pipe (or buffer) full and only when nothing is pending, and never block:
``read``/``write`` answer None where the socket would, and the relay waits for that socket.
``open_mover`` picks splice where the kernel takes it and the pipe is worth having — from the
first read that fills ``COPY_FIRST_BYTES``: until then a direction copies, because most
connections carry a few small messages, and a pipe (made, sized, probed, closed) costs more
than copying them.

A short read — fewer bytes than asked for — drained the socket, and what often comes next is
the end: a reply and its close. So before writing those bytes the copying mover looks once more:
at EOF it writes them with ``MSG_MORE``, and the relay's ``shutdown`` that follows puts the FIN
on the same segment (one packet through the tunnel instead of two); with nothing there, it
knows the socket is empty (``drained``) and the relay waits for it without reading again. Either way no
syscall is added: the read after the write is the one that moved.
"""

import contextlib
import errno
import fcntl
import os
import socket
from functools import cache
from pathlib import Path
from typing import Protocol

import structlog

log = structlog.get_logger(__name__)

#: what a new pipe holds (16 pages) unless its user is over the kernel's pipe allowance
DEFAULT_PIPE_BYTES = 64 * 1024
#: a direction copies until one read fills this much (a bulk transfer), then it splices
COPY_FIRST_BYTES = 16 * 1024
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)
#: what splice answers when it cannot move these sockets' bytes
_SPLICE_REFUSED = frozenset({errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS})


class Mover(Protocol):
    """One direction's way of moving bytes; ``read`` and ``write`` never block."""

    zero_copy: bool
    #: the last read found the socket empty after its bytes (the relay clears it)
    drained: bool

    @property
    def pending(self) -> int:
        """Bytes read and not yet written."""

    def read(self) -> int | None:
        """Read what fits (only when nothing is pending): the count, 0 at EOF, None if none."""

    def write(self) -> int | None:
        """Write pending bytes: the count, or None if the socket takes none now."""


class SpliceMover:
    """Socket → pipe → socket with ``os.splice``: the bytes stay in the kernel."""

    zero_copy = True
    drained = False

    def __init__(self, src: int, dst: int, pipe: tuple[int, int], pipe_size: int) -> None:
        self._src, self._dst = src, dst
        self._pipe_out, self._pipe_in = pipe
        self._pipe_size = pipe_size
        self.pending = 0

    def read(self) -> int | None:
        try:
            self.pending = os.splice(self._src, self._pipe_in, self._pipe_size, flags=_SPLICE_FLAGS)
        except BlockingIOError:  # the pipe is empty here, so it is the socket that has nothing
            return None
        return self.pending

    def write(self) -> int | None:
        try:
            sent = os.splice(self._pipe_out, self._dst, self.pending, flags=_SPLICE_FLAGS)
        except BlockingIOError:  # the pipe holds bytes here, so it is the socket that is full
            return None
        self.pending -= sent
        return sent


class CopyMover:
    """``recv_into``/``send`` through one reused buffer, where splice cannot be used."""

    zero_copy = False
    drained = False

    def __init__(self, src: socket.socket, dst: socket.socket, size: int) -> None:
        self._src, self._dst = src, dst
        self._buffer = memoryview(bytearray(size))
        self._start = self._end = 0

    @property
    def pending(self) -> int:
        return self._end - self._start

    def read(self) -> int | None:
        try:
            self._end = self._src.recv_into(self._buffer)
        except BlockingIOError:
            return None
        self._start = 0
        return self._end

    def write(self) -> int | None:
        try:
            sent = self._dst.send(self._buffer[self._start : self._end])
        except BlockingIOError:
            return None
        self._start += sent
        return sent


class CopyThenSplice:
    """Copies small reads (no buffer of its own: ``recv`` makes the bytes); once a read fills
    ``COPY_FIRST_BYTES`` and its bytes are written, hands over to ``open_bulk_mover``'s choice."""

    def __init__(
        self,
        src: socket.socket,
        dst: socket.socket,
        buffer_size: int,
        pipes: list[int],
    ) -> None:
        self._src, self._dst = src, dst
        self._buffer_size = buffer_size
        self._chunk = min(buffer_size, COPY_FIRST_BYTES)
        self._pipes = pipes
        self._data: bytes | memoryview = b""
        self._bulk = False
        self._eof = False  # the source's EOF is read: it is what comes after ``_data``
        self.drained = False
        self._error: OSError | None = None  # what the look-ahead read raised
        self._then: Mover | None = None
        self.zero_copy = False

    @property
    def pending(self) -> int:
        return len(self._data) if self._then is None else self._then.pending

    def read(self) -> int | None:
        if self._then is not None:
            return self._then.read()
        if self._eof:
            return 0
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        try:
            data = self._src.recv(self._chunk)
        except BlockingIOError:
            return None
        self._bulk = len(data) == self._chunk
        if data and not self._bulk:
            data = self._look_ahead(data)
        self._data = data
        return len(data)

    def _look_ahead(self, data: bytes) -> bytes:
        """After a short read: EOF next (``_eof``), nothing (``drained``) or more bytes."""
        try:
            more = self._src.recv(self._chunk - len(data))
        except BlockingIOError:
            self.drained = True
            return data
        except OSError as exc:
            self._error = exc  # the next read reports it, after these bytes are written
            return data
        if not more:
            self._eof = True
            return data
        return data + more

    def write(self) -> int | None:
        if self._then is not None:
            return self._then.write()
        try:
            # at EOF the bytes wait in the socket for the FIN that shutdown adds right after
            sent = self._dst.send(self._data, socket.MSG_MORE if self._eof else 0)
        except BlockingIOError:  # the socket takes nothing now
            return None
        self._data = memoryview(self._data)[sent:] if sent < len(self._data) else b""
        if self._bulk and not self._data:  # the bytes of a full read are out: splice now
            self._then = open_bulk_mover(self._src, self._dst, self._buffer_size, self._pipes)
            self.zero_copy = self._then.zero_copy
        return sent


def open_mover(
    src: socket.socket,
    dst: socket.socket,
    buffer_size: int,
    force_copy: bool,
    pipes: list[int],
) -> Mover:
    if force_copy or not hasattr(os, "splice"):
        return CopyMover(src, dst, buffer_size)
    return CopyThenSplice(src, dst, buffer_size, pipes)


def open_bulk_mover(
    src: socket.socket, dst: socket.socket, buffer_size: int, pipes: list[int]
) -> Mover:
    """Splice where the kernel takes it and the pipe is worth having, else copy. The pipe's
    descriptors go in ``pipes``, for the relay to close."""
    pipe = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    pipes.extend(pipe)
    with contextlib.suppress(OSError):  # over this user's pipe allowance: EPERM
        fcntl.fcntl(pipe[1], fcntl.F_SETPIPE_SZ, min(buffer_size, _pipe_max_bytes()))
    pipe_size = fcntl.fcntl(pipe[1], fcntl.F_GETPIPE_SZ)
    if pipe_size < min(buffer_size, DEFAULT_PIPE_BYTES):
        # an unprivileged user past fs.pipe-user-pages-soft gets 2-page pipes: copying beats that
        return CopyMover(src, dst, buffer_size)
    if not _splice_works(pipe[0], dst.fileno()):
        log.debug("splice refused, copying instead", family=dst.family.name, type=dst.type.name)
        return CopyMover(src, dst, buffer_size)
    return SpliceMover(src.fileno(), dst.fileno(), pipe, pipe_size)


def _splice_works(empty_pipe: int, dst: int) -> bool:
    """Try splicing an empty pipe into ``dst``: EAGAIN means it would work, and moves nothing."""
    try:
        os.splice(empty_pipe, dst, 1, flags=_SPLICE_FLAGS)
    except BlockingIOError:
        return True
    except OSError as exc:
        if exc.errno in _SPLICE_REFUSED:
            return False
        raise
    return True


@cache
def _pipe_max_bytes() -> int:
    """The largest pipe an unprivileged process may ask for (``fs.pipe-max-size``)."""
    try:
        return int(Path("/proc/sys/fs/pipe-max-size").read_text())
    except (OSError, ValueError):
        return 1024 * 1024  # the kernel's default
