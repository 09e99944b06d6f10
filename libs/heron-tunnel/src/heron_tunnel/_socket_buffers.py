"""Give an older wireguard-go the UDP socket buffers newer releases ask for themselves.

wireguard-go since 2023 sets ``SO_RCVBUFFORCE``/``SO_SNDBUFFORCE`` to 7 MiB on its UDP sockets;
Debian 12's 0.0.20220316 leaves the 208 KiB default, which overflows at a few thousand
datagrams a second: every drop is a TCP retransmit inside the tunnel, and a relay measured
through it ran at 0.63-0.78x the bare interface instead of 0.93-0.96x (bench/tunnel.py). We own
the process, so we do it for it: a copy of each of its UDP sockets' descriptors is taken with
``pidfd_getfd`` (Linux 5.6+, root), the buffers are set on the shared socket, the copy closed.
"""

import ctypes
import os
import socket
from pathlib import Path

#: what wireguard-go since 2023 asks for (``conn.socketBufferSize``)
WIREGUARD_GO_SOCKET_BUFFER = 7 << 20
_SYS_PIDFD_GETFD = 438  # x86-64 and the generic syscall table alike
_SO_SNDBUFFORCE, _SO_RCVBUFFORCE = 32, 33


def set_udp_buffers(pid: int, port: int, size: int = WIREGUARD_GO_SOCKET_BUFFER) -> int:
    """Set the buffers of process ``pid``'s UDP sockets bound to ``port``; how many it set."""
    inodes = set()
    for table in ("udp", "udp6"):  # the process's own network namespace's view
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for fields in (line.split() for line in path.read_text().splitlines()[1:]):
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return 0
    syscall = ctypes.CDLL(None, use_errno=True).syscall
    pidfd = os.pidfd_open(pid)
    changed = 0
    try:
        for entry in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = str(entry.readlink())
            except OSError:  # closed meanwhile
                continue
            if target not in inodes:
                continue
            fd = syscall(_SYS_PIDFD_GETFD, pidfd, int(entry.name), 0)
            if fd < 0:
                raise OSError(ctypes.get_errno(), f"pidfd_getfd on process {pid}")
            with socket.socket(fileno=fd) as sock:
                sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, size)
                sock.setsockopt(socket.SOL_SOCKET, _SO_SNDBUFFORCE, size)
            changed += 1
    finally:
        os.close(pidfd)
    return changed
